"""The ESP32 port's `machine` and `network` API, as the ESP32 board double
(tests/board/esp32_double/) is allowed to offer it.

There is no ESP32 emulator here, so the firmware's ESP32 path runs on the
unix port against a double of `machine`/`network`. A double written by hand
would accept whatever its author believed the port has; this script derives
the allowed surface from the `micropython-esp32-stubs` package instead and
writes it to a checked-in data file (never edited by hand):

    python -m host_tools.esp32_surface            # rewrite the file
    python -m host_tools.esp32_surface --check    # exit 1 if it is stale

The stubs are "merged" stubs: what a real ESP32_GENERIC board reports, plus
the MicroPython documentation, which also describes other ports. Taken out:
private names, type aliases, members whose docstring says
"Availability: ..." without esp32 (e.g. Pin.mode(), cc3200/stm32 only), and
the documentation-only classes of other ports (names ending in "WiPy",
network.AbstractNIC). What is left is a superset of the real port at worst,
never a subset: the double may accept a rare documented keyword the port
lacks (UART(pins=...), from another port's overload), but it refuses every
name the stubs do not have.

Output: JSON Lines (one object per line) so the double, running in a 96 KB
MicroPython heap, parses only the lines of the classes it implements:
    {"module": "machine", "name": null, "consts": {...}, "funcs": {...}, "classes": [...]}
    {"module": "machine", "name": "UART", "consts": {...}, "methods": {...}}
consts map a name to its value (null where the stubs give none); a function
or method maps to {"pos": n positional (-1: *args), "kw": [keyword names],
"varkw": bool}, the union of its overloads (a class's "__init__" is its
constructor).
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import json
import os
import re
import sys
from importlib import metadata
from typing import Any

from host_tools import ROOT

DIST = "micropython-esp32-stubs"
MODULES = ("machine", "network")
OUT = os.path.join(ROOT, "tests", "board", "esp32_double", "esp32_surface.jsonl")
# Where tests/test_typecheck.py installs the ESP32 stubs on their own (the
# rp2 stubs write machine.pyi into the same site-packages; the last one wins).
BUILD_STUBS = os.path.join(ROOT, "build", "stubs", "esp32")
DOC_ONLY_CLASSES = {"AbstractNIC"}  # the docs' interface description, in no port's module
_AVAIL = re.compile(r"Availab\w*\s*(?:of this class)?\s*:\s*([^\n]*(?:\n[ \t]+[^\n.]+)*)", re.I)


def _record_hashes(dist_info: str) -> dict[str, str]:
    out = {}
    with open(os.path.join(dist_info, "RECORD")) as f:
        for line in f:
            parts = line.rstrip("\n").rsplit(",", 2)
            if len(parts) == 3 and parts[1].startswith("sha256="):
                out[parts[0]] = parts[1][7:]
    return out


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return base64.urlsafe_b64encode(hashlib.sha256(f.read()).digest()).rstrip(b"=").decode()


def find_stubs(explicit: str | None = None) -> tuple[str, str]:
    """(directory holding machine.pyi/network.pyi, "dist version"); only a
    directory whose files match the ESP32 package's RECORD hashes."""
    cands = [explicit] if explicit else []
    if not explicit:
        try:
            d = metadata.distribution(DIST)
            cands.append(str(d.locate_file("")))
        except metadata.PackageNotFoundError:
            pass
        cands.append(BUILD_STUBS)
    tried = []
    for base in cands:
        infos = [n for n in (os.listdir(base) if os.path.isdir(base) else [])
                 if n.startswith(DIST.replace("-", "_") + "-") and n.endswith(".dist-info")]
        if not infos:
            tried.append(f"{base}: no {DIST} dist-info")
            continue
        rec = _record_hashes(os.path.join(base, infos[0]))
        bad = [m for m in MODULES if not os.path.exists(os.path.join(base, m + ".pyi"))
               or rec.get(m + ".pyi") != _sha(os.path.join(base, m + ".pyi"))]
        if bad:
            tried.append(f"{base}: {', '.join(m + '.pyi' for m in bad)} not the ESP32 package's "
                         "(another port's stubs installed over them?)")
            continue
        version = infos[0][len(DIST) + 1:-len(".dist-info")]
        return base, f"{DIST} {version}"
    raise SystemExit("esp32_surface: no intact ESP32 stubs found:\n  " + "\n  ".join(tried) +
                     f"\n  install them apart: pip install --no-deps --target {BUILD_STUBS} "
                     f"{DIST}==1.29.0.post1 micropython-stdlib-stubs==1.29.0.post2")


def _ports(node: ast.AST) -> list[str] | None:
    # The ports an "Availability: ..." line names (lower case), or None.
    doc = ast.get_docstring(node) if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else None
    if not doc:
        return None
    m = _AVAIL.search(doc)
    if not m:
        return None
    return [p for p in re.split(r"[^a-z0-9-]+", m.group(1).lower()) if p and p not in ("port", "ports")]


def _esp32(node: ast.AST) -> bool:
    ports = _ports(node)
    return ports is None or "esp32" in ports


def _value(node: ast.expr | None) -> int | float | str | bool | None:
    if node is None:
        return None
    try:
        v = ast.literal_eval(node)
    except ValueError:
        return None
    return v if isinstance(v, (int, float, str, bool)) else None


def _is_alias(node: ast.AnnAssign) -> bool:
    return "TypeAlias" in ast.unparse(node.annotation)


def _sig(fn: ast.FunctionDef, method: bool) -> dict[str, Any]:
    a = fn.args
    posonly = [x.arg for x in a.posonlyargs]
    normal = [x.arg for x in a.args]
    params = posonly + normal
    if method and params:
        # self / cls; a staticmethod has none
        if not any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list):
            if params[0] in ("self", "cls"):
                if posonly:
                    posonly = posonly[1:]
                else:
                    normal = normal[1:]
    kw = normal + [x.arg for x in a.kwonlyargs]
    return {"pos": -1 if a.vararg else len(posonly) + len(normal), "kw": kw, "varkw": a.kwarg is not None}


def _merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:
        return {"pos": new["pos"], "kw": list(new["kw"]), "varkw": new["varkw"]}
    pos = -1 if -1 in (old["pos"], new["pos"]) else max(old["pos"], new["pos"])
    kw = old["kw"] + [k for k in new["kw"] if k not in old["kw"]]
    return {"pos": pos, "kw": kw, "varkw": old["varkw"] or new["varkw"]}


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__" or name == "__call__"


def parse(path: str, module: str, dropped: dict[str, str]) -> list[dict[str, Any]]:
    tree = ast.parse(open(path).read(), path)
    top: dict[str, Any] = {"module": module, "name": None, "consts": {}, "funcs": {}}
    classes: dict[str, dict[str, Any]] = {}
    for n in tree.body:
        if isinstance(n, (ast.Assign, ast.AnnAssign)):
            if isinstance(n, ast.AnnAssign) and _is_alias(n):
                continue
            targets = [n.target] if isinstance(n, ast.AnnAssign) else n.targets
            for t in targets:
                if isinstance(t, ast.Name) and _public(t.id) and not t.id.startswith("__"):
                    top["consts"][t.id] = _value(n.value)
        elif isinstance(n, ast.FunctionDef) and _public(n.name):
            if n.name == "const":
                continue  # micropython.const, re-exported by the stub only for typing
            if not _esp32(n):
                dropped[f"{module}.{n.name}"] = "Availability: " + ", ".join(_ports(n) or [])
                continue
            top["funcs"][n.name] = _merge(top["funcs"].get(n.name), _sig(n, False))
        elif isinstance(n, ast.ClassDef) and _public(n.name):
            if n.name.endswith("WiPy") or n.name in DOC_ONLY_CLASSES:
                dropped[f"{module}.{n.name}"] = "documentation of another port's class"
                continue
            if not _esp32(n):
                dropped[f"{module}.{n.name}"] = "Availability: " + ", ".join(_ports(n) or [])
                continue
            c = classes.setdefault(n.name, {"module": module, "name": n.name, "bases": [],
                                            "consts": {}, "methods": {}})
            for base_expr in n.bases:
                b = ast.unparse(base_expr)
                if b not in c["bases"]:
                    c["bases"].append(b)
            for m in n.body:
                if isinstance(m, (ast.Assign, ast.AnnAssign)):
                    targets = [m.target] if isinstance(m, ast.AnnAssign) else m.targets
                    for t in targets:
                        if isinstance(t, ast.Name) and _public(t.id) and not t.id.startswith("__"):
                            c["consts"][t.id] = _value(m.value)
                elif isinstance(m, ast.FunctionDef) and _public(m.name):
                    if not _esp32(m):
                        dropped[f"{module}.{n.name}.{m.name}"] = "Availability: " + ", ".join(_ports(m) or [])
                        continue
                    c["methods"][m.name] = _merge(c["methods"].get(m.name), _sig(m, True))
                elif isinstance(m, ast.ClassDef) and _public(m.name):
                    c["consts"][m.name] = None  # a nested namespace (Pin.board)
    # A name defined as a method in one overload and dropped in another
    # stays: it exists on the ESP32 by the surviving definition.
    for key in list(dropped):
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == module and parts[2] in classes.get(parts[1], {}).get("methods", {}):
            del dropped[key]
        if len(parts) == 2 and parts[0] == module and parts[1] in top["funcs"]:
            del dropped[key]
    # Inherited members (Signal(Pin), SoftI2C(I2C), SoftSPI(SPI)) are the
    # subclass's too.
    for c in classes.values():
        for b in c["bases"]:
            base = classes.get(b)
            if base:
                for k, v in base["consts"].items():
                    c["consts"].setdefault(k, v)
                for k, v in base["methods"].items():
                    c["methods"].setdefault(k, v)
    for c in classes.values():
        top["consts"].pop(c["name"], None)
        c.pop("bases")
    top["classes"] = sorted(classes)
    return [top] + [classes[k] for k in sorted(classes)]


def generate(stubs_dir: str, source: str) -> str:
    dropped: dict[str, str] = {}
    lines = [json.dumps({"source": source, "generator": "host_tools/esp32_surface.py",
                         "note": "generated from the stubs; do not edit"})]
    for mod in MODULES:
        for entry in parse(os.path.join(stubs_dir, mod + ".pyi"), mod, dropped):
            entry["consts"] = dict(sorted(entry["consts"].items()))
            for k in ("funcs", "methods"):
                if k in entry:
                    entry[k] = dict(sorted(entry[k].items()))
            lines.append(json.dumps(entry, sort_keys=False, separators=(",", ":")))
    lines.append(json.dumps({"dropped": dict(sorted(dropped.items()))}, separators=(",", ":")))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m host_tools.esp32_surface", description=__doc__.split("\n\n")[0])
    ap.add_argument("--stubs", help="directory with the ESP32 stubs (default: installed package, "
                                    "else build/stubs/esp32)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    a = ap.parse_args(argv)
    d, source = find_stubs(a.stubs)
    text = generate(d, source)
    if a.check:
        try:
            old = open(a.out).read()
        except OSError:
            old = ""
        if old != text:
            print(f"{a.out} is stale: run python -m host_tools.esp32_surface", file=sys.stderr)
            return 1
        print(f"{a.out}: up to date ({source})")
        return 0
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {a.out} from {source} ({d})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
