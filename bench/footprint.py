"""7. Footprint: the compiled firmware (.mpy, plus main.py as source) per board."""

from __future__ import annotations

import os
import tempfile

from host_tools import ROOT


def boards():
    return sorted(n[:-5] for n in os.listdir(os.path.join(ROOT, "boards")) if n.endswith(".json"))


def measure() -> dict:
    from host_tools.build import build

    out = {}
    root = tempfile.mkdtemp(prefix="h2pile-bench-fp-")
    for b in boards():
        d = build(b, root)
        lib = os.path.join(d, "lib")
        mods = {}
        for dp, _ds, fs in os.walk(lib):
            for f in fs:
                mods[os.path.relpath(os.path.join(dp, f), lib)] = os.path.getsize(os.path.join(dp, f))
        main = os.path.getsize(os.path.join(d, "main.py"))
        top = sorted(mods.items(), key=lambda kv: -kv[1])[:5]
        out[b] = {"mpy_bytes": sum(mods.values()), "modules": len(mods), "main_py_bytes": main,
                  "largest": top}
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    return out
