"""Every function of the host tools has a typed signature: each parameter
(but a method's self/cls) and the return annotated.

Checked: module-level functions and the methods of classes (nested classes
too), wherever they sit in the module's or a class's statements (under an
`if`, a `try`, ...). Not checked: functions defined inside functions (local
callbacks), and MicroPython code, which must run without annotations:
programs held in strings (ast sees them as strings) and the board agent,
whose hints flash strips before sending it (host_tools/flash/session.py,
agent_code)."""

from __future__ import annotations

import ast
import os

from host_tools import ROOT

TOOLS = os.path.join(ROOT, "host_tools")
# MicroPython source files under host_tools/, sent to a board as they are or
# with their hints stripped: what they may carry is tests/tools/test_board_agent.py's concern.
MICROPYTHON_FILES = {os.path.join("host_tools", "flash", "board_agent.py")}

FuncDef = ast.FunctionDef | ast.AsyncFunctionDef


def _missing(fn: FuncDef, method: bool) -> list[str]:
    """What fn's signature leaves unannotated: parameter names and "return"."""
    a = fn.args
    positional = a.posonlyargs + a.args
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    if method and not static and positional and positional[0].arg in ("self", "cls"):
        positional = positional[1:]
    params = positional + a.kwonlyargs
    out = [p.arg for p in params if p.annotation is None]
    if a.vararg is not None and a.vararg.annotation is None:
        out.append("*" + a.vararg.arg)
    if a.kwarg is not None and a.kwarg.annotation is None:
        out.append("**" + a.kwarg.arg)
    if fn.returns is None:
        out.append("return")
    return out


def _defs(node: ast.AST, method: bool = False, prefix: str = "") -> list[tuple[FuncDef, bool, str]]:
    """(def, is a method, qualified name) for the functions directly in node's
    statements and in its classes' bodies; not the functions inside them."""
    out: list[tuple[FuncDef, bool, str]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((child, method, prefix + child.name))
        elif isinstance(child, ast.ClassDef):
            out += _defs(child, True, prefix + child.name + ".")
        elif isinstance(child, ast.stmt) or isinstance(child, ast.excepthandler | ast.match_case):
            out += _defs(child, method, prefix)
    return out


def _sources() -> list[str]:
    out = []
    for d, dirs, files in os.walk(TOOLS):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        out += [os.path.relpath(os.path.join(d, f), ROOT) for f in sorted(files) if f.endswith(".py")]
    return out


def unannotated(rel: str) -> list[str]:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        tree = ast.parse(f.read(), rel)
    return ["%s:%d:%s: no annotation for %s" % (rel, fn.lineno, name, ", ".join(miss))
            for fn, method, name in _defs(tree) if (miss := _missing(fn, method))]


def test_the_checker_finds_what_lacks_a_hint():
    src = '''
def ok(a: int, *b: str, c: int = 1, **d: int) -> None: ...
def no_ret(a: int): ...
class C:
    def __init__(self, x) -> None:
        def inner(y): ...
    @staticmethod
    def s(self) -> None: ...
    @classmethod
    def k(cls, *a) -> None: ...
    class D:
        async def m(self, **kw) -> None: ...
if True:
    def cond(): ...
PROGRAM = """
def on_the_board(x):
    pass
"""
'''
    tree = ast.parse(src)
    got = {name: _missing(fn, method) for fn, method, name in _defs(tree)}
    assert got == {"ok": [], "no_ret": ["return"], "C.__init__": ["x"], "C.s": ["self"],
                   "C.k": ["*a"], "C.D.m": ["**kw"], "cond": ["return"]}


def test_host_tools_signatures_are_annotated():
    files = [f for f in _sources() if f not in MICROPYTHON_FILES]
    assert os.path.join("host_tools", "cli.py") in files and len(files) > 20
    bad = [line for f in files for line in unannotated(f)]
    assert not bad, "functions without type hints:\n" + "\n".join(bad)
