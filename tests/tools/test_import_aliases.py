"""One alias per module across the tree: `from h2p import codes as K` reads the
same everywhere, and no alias stands for two modules (`R` was both codes and
registers, `M` both registers and modbus)."""

import ast
import collections
import os

from tests.helpers.fwbuild import ROOT

TOPS = ("firmware", "host_tools", "sim", "bench", "tests")
PACKAGES = ("h2p", "host_tools", "sim", "bench")
# The board module a boot picks is `m` whichever board it is: one role.
SAME_ROLE = {"m": "the board module"}


def aliases(files):
    """{module: {alias: [file:line, ...]}} for `from PKG import mod as alias` and `import PKG.mod as alias`."""
    seen = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in files:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in PACKAGES:
                names = [(node.module + "." + a.name, a.asname) for a in node.names]
            elif isinstance(node, ast.Import):
                names = [(a.name, a.asname) for a in node.names if a.name.split(".")[0] in PACKAGES]
            else:
                continue
            for mod, alias in names:
                if alias:
                    seen[mod][alias].append("%s:%d" % (os.path.relpath(path, ROOT), node.lineno))
    return seen


def problems(seen):
    out = []
    for mod, al in sorted(seen.items()):
        if len(al) > 1:
            out.append("%s has aliases %s" % (mod, ", ".join("%s (%s)" % (a, w[0]) for a, w in sorted(al.items()))))
    by_alias = collections.defaultdict(set)
    for mod, al in seen.items():
        for a in al:
            by_alias[a].add(mod)
    for a, mods in sorted(by_alias.items()):
        if len(mods) > 1 and a not in SAME_ROLE:
            out.append("alias %s stands for %s" % (a, ", ".join(sorted(mods))))
    return out


def _tree():
    for top in TOPS:
        for d, dirs, fs in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [x for x in dirs if x not in ("__pycache__", "esp32_double")]
            yield from (os.path.join(d, f) for f in fs if f.endswith(".py"))


def test_one_alias_per_module_across_the_tree():
    assert problems(aliases(_tree())) == []


def test_the_check_sees_both_kinds_of_clash(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("from h2p import codes as R\nfrom h2p import modbus as M\n")
    b = tmp_path / "b.py"
    b.write_text("from h2p import codes as K\nimport h2p.registers as M\n")
    out = problems(aliases([str(a), str(b)]))
    assert any(p.startswith("h2p.codes has aliases K") for p in out), out
    assert "alias M stands for h2p.modbus, h2p.registers" in out, out
