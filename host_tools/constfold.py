"""Fold other modules' constants into a firmware module at build time.

MicroPython folds a `const()` only inside the module that defines it: in
h2p.supervisor, `S.CHARGING` or `K.PILOT_C` is a global load and an attribute
lookup on every use (~3 us each on an RP2040, ~25 of them in a control step:
issue 16). The source keeps one truth (`from h2p import states as S` and
`S.CHARGING`); the build replaces `S.CHARGING` with its value in what goes to
the board, for every alias of an h2p module and every name that module
defines with `NAME = const(...)` at its top level.

Folded: `alias.NAME`, where `alias` is bound once, by its import (a module
that also assigns to the alias anywhere is left as it is) and is not itself
after a dot; and a const imported by name (`from h2p.readings import
UNKNOWN`), bound only by that import, wherever it is used. Line numbers stay as they are (a crash
report names the source's lines).
"""

from __future__ import annotations

import ast
import io
import os
import tokenize
from collections.abc import Callable

from host_tools import FIRMWARE

# A module that says so is left as it is: a table built once at boot
# (h2p.registers) whose rows, folded, became constants of the compiled code
# (kept with it: +2 KB of heap) instead of tuples made once and dropped.
NO_FOLD = "# constfold: off"


def module_consts(path: str) -> dict[str, int]:
    """NAME -> value for each top-level `NAME = const(<int expression>)`."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    out: dict[str, int] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        v = node.value
        if not (isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "const"
                and len(v.args) == 1 and not v.keywords):
            continue
        try:
            value = _int_expr(v.args[0], out)
        except ValueError:
            continue  # not a plain integer expression: left to the runtime
        out[node.targets[0].id] = value
    # A _NAME const is the module's own (MicroPython drops it from the
    # module's globals): another module may not use it, so it is not folded.
    return out


def public_consts(path: str) -> dict[str, int]:
    """module_consts() less the module's own (_NAME): what others may use."""
    return {k: v for k, v in module_consts(path).items() if not k.startswith("_")}


_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.LShift: lambda a, b: a << b, ast.RShift: lambda a, b: a >> b, ast.BitOr: lambda a, b: a | b,
           ast.BitAnd: lambda a, b: a & b, ast.FloorDiv: lambda a, b: a // b}


def _int_expr(node: ast.expr, known: dict[str, int]) -> int:
    # An integer literal, a const defined above it, or +, -, *, <<, >>, |,
    # &, // of those (what const() accepts in practice).
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name) and node.id in known:
        return known[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_int_expr(node.operand, known)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_int_expr(node.left, known), _int_expr(node.right, known))
    raise ValueError("not an integer expression")


def _imports(src: str) -> tuple[dict[str, str], dict[str, tuple[str, str]], set[int]]:
    # (module aliases, names imported from an h2p module: local -> (module,
    # name), the lines of import statements), each bound only by its import.
    tree = ast.parse(src)
    found: dict[str, str] = {}
    names_in: dict[str, tuple[str, str]] = {}
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, ast.ImportFrom) and node.module == "h2p" and node.level == 0:
            for a in node.names:
                found[a.asname or a.name] = a.name
        elif (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
              and node.module.startswith("h2p.") and node.module.count(".") == 1):
            for a in node.names:
                names_in[a.asname or a.name] = (node.module[4:], a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("h2p.") and a.asname and a.name.count(".") == 1:
                    found[a.asname] = a.name[4:]
    bound: dict[str, int] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names = [node.id]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.asname or a.name.split(".")[0] for a in node.names]
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names = list(node.names)
        for n in names:
            bound[n] = bound.get(n, 0) + 1
    once = {a: m for a, m in found.items() if bound.get(a, 0) == 1}
    return once, {n: mn for n, mn in names_in.items() if bound.get(n, 0) == 1}, lines


def _literal(v: int) -> str:
    return str(v) if v >= 0 else "(%d)" % v


def fold(src: str, consts_of: Callable[[str], dict[str, int]]) -> str:
    """`src` with every `alias.NAME` of a const replaced by its value, and
    every use of a const imported by name (`from h2p.readings import
    UNKNOWN`); consts_of(module) -> that h2p module's {NAME: value}."""
    if NO_FOLD in src:
        return src
    mods, names_in, import_lines = _imports(src)
    table = {a: consts_of(m) for a, m in mods.items()}
    table = {a: c for a, c in table.items() if c}
    bare = {n: consts_of(m)[attr] for n, (m, attr) in names_in.items() if attr in consts_of(m)}
    if not table and not bare:
        return src
    toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    edits: list[tuple[int, int, int, str]] = []  # (row, col start, col end, text)
    n = len(toks)
    for j in range(n):
        a = toks[j]
        if a.type != tokenize.NAME or a.start[0] in import_lines:
            continue
        after_dot = j and toks[j - 1].type == tokenize.OP and toks[j - 1].string == "."
        if after_dot:
            continue
        nxt = toks[j + 1] if j + 1 < n else None
        if a.string in table and j + 2 < n and nxt is not None and nxt.string == "." and nxt.type == tokenize.OP:
            name = toks[j + 2]
            if name.type == tokenize.NAME and name.string in table[a.string] and a.start[0] == name.end[0]:
                edits.append((a.start[0], a.start[1], name.end[1], _literal(table[a.string][name.string])))
        elif a.string in bare and not (nxt is not None and nxt.type == tokenize.OP and nxt.string == "="):
            # (a keyword argument of that name is no use of it)
            edits.append((a.start[0], a.start[1], a.end[1], _literal(bare[a.string])))
    lines = src.splitlines(keepends=True)
    for row, c0, c1, text in reversed(edits):  # right to left: columns stay valid
        ln = lines[row - 1]
        lines[row - 1] = ln[:c0] + text + ln[c1:]
    return _drop_unused_imports("".join(lines), mods)


def _drop_unused_imports(src: str, mods: dict[str, str]) -> str:
    # An import of one h2p module whose every use was folded goes too (as
    # `pass`, the line kept): on a board the module is then never loaded
    # for its constants alone (h2p.codes: ~1.4 KB of heap).
    tree = ast.parse(src)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    lines = src.splitlines(keepends=True)
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and node.module == "h2p" and node.level == 0
                and len(node.names) == 1 and (node.names[0].asname or node.names[0].name) in mods
                and (node.names[0].asname or node.names[0].name) not in used
                and node.lineno == node.end_lineno):
            ln = lines[node.lineno - 1]
            lines[node.lineno - 1] = ln[:node.col_offset] + "pass  # (folded)" + ln[node.end_col_offset:]
    return "".join(lines)


def firmware_consts(src_dir: str = os.path.join(FIRMWARE, "h2p")) -> Callable[[str], dict[str, int]]:
    """consts_of for fold(): the firmware's modules, each parsed once."""
    cache: dict[str, dict[str, int]] = {}

    def consts_of(module: str) -> dict[str, int]:
        if module not in cache:
            path = os.path.join(src_dir, module + ".py")
            cache[module] = public_consts(path) if os.path.exists(path) else {}
        return cache[module]

    return consts_of
