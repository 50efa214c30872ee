"""Conditions (`when = ...`, `until = ...`): a tiny language over the plant's
summary and the firmware's state, parsed here, never eval'd, checked against
the names and types it may use when the scenario is loaded."""

from __future__ import annotations

import re
from typing import Any

from h2p import interlocks as IL
from h2p import states as S
from sim import params as P

# expr := and ('or' and)* ; and := not ('and' not)* ; not := 'not' not | atom
# atom := '(' expr ')' | NAME OP LITERAL | NAME 'contains' LITERAL
# OP := == != < <= > >= ; LITERAL := number | 'text' | "text" | true | false
_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<str>'[^']*'|\"[^\"]*\")"
    r"|(?P<op>==|!=|<=|>=|<|>|\(|\))|(?P<name>[A-Za-z_][A-Za-z0-9_]*))")
_OPS = ("==", "!=", "<", "<=", ">", ">=")


def context_types() -> dict[str, type]:
    """What a condition may name, with its type."""
    from sim.plant import Plant

    types = {k: type(v) for k, v in Plant(P.defaults()).summary().items() if not isinstance(v, dict)}
    types.update({"state": str, "t": float, "faults": list, "sessions": int, "stops": int})
    return types


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read condition at {text[pos:pos + 12]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        val = m.group(kind)
        if kind == "num":
            out.append(("lit", float(val)))
        elif kind == "str":
            out.append(("lit", val[1:-1]))
        elif kind == "name" and val in ("true", "false"):
            out.append(("lit", val == "true"))
        elif kind == "name" and val in ("and", "or", "not", "contains"):
            out.append(("kw", val))
        else:
            out.append((kind, val))
    return out


class Condition:
    def __init__(self, text: str, types: dict[str, type] | None = None) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a condition must be a non-empty string")
        self.text = text
        self.types = types or context_types()
        self.toks = _tokens(text)
        self.i = 0
        self.tree = self._or()
        if self.i != len(self.toks):
            raise ValueError(f"unexpected {self.toks[self.i][1]!r} in condition {text!r}")
        self.names: set[str] = set()
        self._collect(self.tree)

    def _peek(self) -> tuple[Any, Any]:
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def _take(self) -> tuple[Any, Any]:
        t = self._peek()
        if t[0] is None:
            raise ValueError(f"condition {self.text!r} ends too early")
        self.i += 1
        return t

    def _or(self) -> tuple:
        node = self._and()
        while self._peek() == ("kw", "or"):
            self.i += 1
            node = ("or", node, self._and())
        return node

    def _and(self) -> tuple:
        node = self._not()
        while self._peek() == ("kw", "and"):
            self.i += 1
            node = ("and", node, self._not())
        return node

    def _not(self) -> tuple:
        if self._peek() == ("kw", "not"):
            self.i += 1
            return ("not", self._not())
        return self._atom()

    def _atom(self) -> tuple:
        kind, val = self._take()
        if (kind, val) == ("op", "("):
            node = self._or()
            if self._take() != ("op", ")"):
                raise ValueError(f"missing ')' in condition {self.text!r}")
            return node
        if kind != "name":
            raise ValueError(f"expected a name in condition {self.text!r}, got {val!r}")
        if val not in self.types:
            raise ValueError(f"unknown name {val!r} in condition (known: {', '.join(sorted(self.types))})")
        typ = self.types[val]
        okind, op = self._take()
        if (okind, op) == ("kw", "contains"):
            if typ is not list:
                raise ValueError(f"'contains' needs a list ({val!r} is not one; 'faults' is)")
        elif okind != "op" or op not in _OPS:
            raise ValueError(f"expected a comparison after {val!r} in condition {self.text!r}")
        lkind, lit = self._take()
        if lkind != "lit":
            raise ValueError(f"expected a number, 'text', true or false after {val} {op}")
        if op == "contains":
            if lit not in IL.ROW:
                raise ValueError(f"unknown fault {lit!r} (known: {', '.join(IL.ROW)})")
        elif typ is str:
            if not isinstance(lit, str) or op not in ("==", "!="):
                raise ValueError(f"{val!r} is text: compare it with == or != and a quoted value")
            if val == "state" and lit not in S.NAMES:
                raise ValueError(f"unknown state {lit!r} (states: {', '.join(S.NAMES)})")
        elif typ is list:
            raise ValueError(f"{val!r} is a list: use {val} contains 'name'")
        elif isinstance(lit, str):
            raise ValueError(f"{val!r} is a number: compare it with a number, not {lit!r}")
        return ("cmp", val, op, lit)

    def _collect(self, n: tuple) -> None:
        if n[0] == "cmp":
            self.names.add(n[1])
        else:
            for c in n[1:]:
                self._collect(c)

    def eval(self, ctx: dict) -> bool:
        return self._eval(self.tree, ctx)

    def _eval(self, n: tuple, ctx: dict) -> bool:
        k = n[0]
        if k == "or":
            return self._eval(n[1], ctx) or self._eval(n[2], ctx)
        if k == "and":
            return self._eval(n[1], ctx) and self._eval(n[2], ctx)
        if k == "not":
            return not self._eval(n[1], ctx)
        _, name, op, lit = n
        v = ctx.get(name)
        if v is None:
            return False  # not known yet: the condition does not hold
        if op == "contains":
            return lit in v
        try:
            if op == "==":
                return v == lit
            if op == "!=":
                return v != lit
            if op == "<":
                return v < lit
            if op == "<=":
                return v <= lit
            if op == ">":
                return v > lit
            return v >= lit
        except TypeError:
            return False


