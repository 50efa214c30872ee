"""h2p.app.run when a task dies and even the crash path (h2p.crash, loaded
only then) finds no memory: the console still says what died, and the board
resets on purpose instead of hanging or dying silently."""

import asyncio
import builtins

from h2p import app


class Board:
    def __init__(self):
        self.resets = []

    def reset(self, why):
        self.resets.append(why)


def test_a_crash_with_no_memory_for_the_crash_path_is_said_and_resets(monkeypatch, capsys):
    async def dies():
        raise ValueError("sensor table broken")

    monkeypatch.setattr(app, "_start", lambda pile, board: [asyncio.ensure_future(dies())])
    real_import = builtins.__import__

    def no_room_for_crash(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "h2p" and fromlist and "crash" in fromlist:
            raise MemoryError("memory allocation failed, allocating 368 bytes")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_room_for_crash)
    board = Board()
    asyncio.run(app.run(object(), board))
    out = capsys.readouterr().out
    assert "CRASH task ? (no memory for the crash path)" in out
    assert "sensor table broken" in out
    assert board.resets == ["crash"]
