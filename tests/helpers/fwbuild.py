"""The firmware compiled once for the whole test run, shared by every test (and
every xdist worker) that runs it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
# Keyed by what goes into a build, so an edit to the firmware rebuilds and two
# checkouts never share a stale one.
_INPUTS = ("firmware", "boards", os.path.join("host_tools", "build.py"), os.path.join("host_tools", "constfold.py"))


def _inputs_hash(board: str) -> str:
    h = hashlib.sha256(board.encode())
    for top in _INPUTS:
        path = os.path.join(ROOT, top)
        # Not __pycache__: another worker may be writing a .pyc there (as
        # x.pyc.<id>, renamed when done) while this walks.
        files = [path] if os.path.isfile(path) else sorted(
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if "__pycache__" not in d)
        for f in files:
            h.update(os.path.relpath(f, ROOT).encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def build_shared(board: str = "unix_sim") -> str:
    """build/test-fw/<hash>/<board>: built by the first worker that asks, under
    a lock; the others wait for it and reuse it."""
    from host_tools.build import build

    out_root = os.path.join(ROOT, "build", "test-fw", _inputs_hash(board))
    os.makedirs(out_root, exist_ok=True)
    done = os.path.join(out_root, board + ".done")
    with open(os.path.join(out_root, board + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(done):
            build(board, out_root)
            open(done, "w").close()
    return os.path.join(out_root, board)


def build_unix(out_root: str | None = None) -> str:
    from host_tools.build import build

    if out_root is None:
        return build_shared("unix_sim")
    return build("unix_sim", out_root)
