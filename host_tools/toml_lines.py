"""Where each key of a TOML text is written: tomllib gives line numbers
only for syntax errors, and a file's user wants every other mistake named
with its line too (host_tools/tariff.py)."""

from __future__ import annotations

import tomllib


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line (1-based) where each table and key of a TOML text is written,
    by its full dotted path. tomllib gives line numbers only for syntax
    errors; this scan reads each header and `key = value` line and has
    tomllib parse the key itself (quoted and dotted keys included). A key
    inside an inline table is found at the line of that table."""
    out: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string = None  # the quotes of a multi-line string we are in
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if in_string:
            if line.count(in_string) % 2:
                in_string = None
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            head = line[2:] if line.startswith("[[") else line[1:]
            path = _path(head.split("]")[0] + " = 0") if "]" in head else None
            if path is not None:
                table = path
                _note(out, table, n)
            continue
        if "=" not in line:
            continue
        for i in (j for j, ch in enumerate(line) if ch == "="):
            path = _path(line[:i] + "= 0")
            if path is not None:
                _note(out, table + path, n)
                break
        for q in ('"""', "'''"):
            if line.count(q) % 2:
                in_string = q
    return out


def _note(out: dict[tuple[str, ...], int], path: tuple[str, ...], n: int) -> None:
    # path and each table it makes on the way (a.b.c = 1 makes a and a.b) first written at line n
    for i in range(1, len(path) + 1):
        out.setdefault(path[:i], n)


def _path(key_eq_0: str) -> tuple[str, ...] | None:
    # "a.'b c'.d = 0" -> ("a", "b c", "d"); None if it is not a key
    try:
        d = tomllib.loads(key_eq_0)
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(d, dict) and len(d) == 1:
        k, d = next(iter(d.items()))
        path.append(k)
    return tuple(path) or None


def line_of(lines: dict[tuple[str, ...], int], keys: tuple[str, ...]) -> int | None:
    """The line of keys, else of the closest table that holds them."""
    for i in range(len(keys), 0, -1):
        if keys[:i] in lines:
            return lines[keys[:i]]
    return None
