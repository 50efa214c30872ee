"""The same exit code for the same kind of error across commands
(host_tools/exitcodes.py), with one line on stderr that names what was wrong
and where, and no traceback. Each command is fed a bad argument or a bad
file, or pointed at something that does not answer."""

from __future__ import annotations

import socket

import pytest

from host_tools import cli, exitcodes
from host_tools.exitcodes import INTERRUPTED, UNREACHABLE, USAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_codes_are_the_documented_ones():
    assert (exitcodes.OK, exitcodes.FAILED, USAGE, UNREACHABLE, INTERRUPTED) == (0, 1, 2, 3, 130)
    doc = exitcodes.__doc__
    for code, name in ((0, "OK"), (1, "FAILED"), (2, "USAGE"), (3, "UNREACHABLE"), (4, "WRONG_BOARD"),
                       (5, "NO_SPACE"), (6, "MISMATCH"), (7, "BOARD_ERROR"), (130, "INTERRUPTED")):
        assert getattr(exitcodes, name) == code
        assert f"{code}  {name}" in doc


def _files(tmp_path):
    (tmp_path / "empty").write_text("")
    (tmp_path / "secret").write_text("fleet-s3cret\n")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.toml").write_text('duration = "1m"\n[[event]]\ndo = "explode"\nat = "1s"\n')
    return tmp_path


NOPORT = "/nonexistent/ttyUSB9"

# (argv, exit code, words the one error line must contain)
CASES = [
    # usage: bad arguments and bad input files
    (["flash", "--port", NOPORT, "--board", "toaster"], USAGE, ["--board", "toaster", "unknown board"]),
    (["flash", "--port", NOPORT, "--board", "unix_sim", "--build", "{tmp}"], USAGE,
     ["{tmp}", "not a firmware build"]),
    (["provision", "--port", NOPORT, "--pile-id", "p-1", "--fleet-secret-file", "{tmp}/missing"], USAGE,
     ["--fleet-secret-file", "{tmp}/missing", "cannot read"]),
    (["provision", "--port", NOPORT, "--pile-id", "p-1", "--fleet-secret-file", "{tmp}/empty"], USAGE,
     ["--fleet-secret-file", "{tmp}/empty", "empty"]),
    (["provision", "--port", NOPORT, "--pile-id", "p-1", "--fleet-secret-file", "{tmp}/secret",
      "--config", "{tmp}/bad.json"], USAGE, ["--config", "{tmp}/bad.json", "not valid JSON"]),
    (["provision", "--port", NOPORT, "--pile-id", "Bad ID!", "--fleet-secret-file", "{tmp}/secret"], USAGE,
     ["bad pile id", "Bad ID!"]),
    (["provision", "--port", NOPORT, "--pile-id", "p-1", "--fleet-secret-file", "{tmp}/secret",
      "--ca", "{tmp}/bad.json"], USAGE, ["--ca", "{tmp}/bad.json", "certificate"]),
    (["keys", "--fleet-secret-file", "{tmp}/secret", "bad/id"], USAGE, ["bad pile id", "bad/id"]),
    (["keys", "--fleet-secret-file", "{tmp}/empty", "p1"], USAGE, ["--fleet-secret-file", "empty"]),
    (["broker-config", "--fleet-secret-file", "{tmp}/secret", "--piles", "A,b/c", "--out", "{tmp}/o"], USAGE,
     ["bad pile id", "b/c"]),
    (["cmd", "p1", "fly", "--fleet-secret-file", "{tmp}/secret"], USAGE, ["unknown op 'fly'"]),
    (["cmd", "p1", "wake", "--key", "abc"], USAGE, ["--key", "64 hex"]),
    (["cmd", "p1", "wake", "--fleet-secret-file", "{tmp}/secret", "--broker", "host:port"], USAGE,
     ["--broker", "host:port"]),
    (["monitor", "--broker", "host:notaport", "--once"], USAGE, ["--broker", "host:notaport"]),
    (["sim", "run", "{tmp}/bad.toml"], USAGE, ["{tmp}/bad.toml:3", "unknown event 'explode'"]),
    (["sim", "run", "{tmp}/missing.toml"], USAGE, ["{tmp}/missing.toml", "cannot read"]),
    (["sim", "inject", "ev_unplug", "--control", "nowhere"], USAGE, ["--control", "HOST:PORT"]),
    (["sim", "inject", "h2_leak", "lel=lots"], USAGE, ["lel", "not a number"]),
    (["build", "toaster"], USAGE, ["toaster"]),
    (["docs", "--print", "nothing"], USAGE, ["nothing"]),
    # unreachable: nothing behind the port / address
    (["flash", "--port", NOPORT, "--rollback"], UNREACHABLE, [NOPORT, "no such serial port"]),
    (["verify", "--port", NOPORT], UNREACHABLE, [NOPORT, "no such serial port"]),
    (["provision", "--port", NOPORT, "--pile-id", "p-1", "--fleet-secret-file", "{tmp}/secret"], UNREACHABLE,
     [NOPORT]),
    (["bus", "scan", "--port", NOPORT], UNREACHABLE, [NOPORT, "cannot open"]),
    (["cmd", "p1", "wake", "--fleet-secret-file", "{tmp}/secret", "--broker", "127.0.0.1:{port}"],
     UNREACHABLE,
     ["cannot connect", "127.0.0.1:{port}"]),
    (["monitor", "--broker", "127.0.0.1:{port}", "--once"], UNREACHABLE,
     ["cannot connect", "127.0.0.1:{port}"]),
    (["sim", "inject", "ev_unplug", "--control", "127.0.0.1:{port}"], UNREACHABLE,
     ["no simulator on 127.0.0.1:{port}"]),
    (["sim", "status", "--control", "127.0.0.1:{port}"], UNREACHABLE, ["no simulator on 127.0.0.1:{port}"]),
]


@pytest.mark.parametrize("argv, code, words", CASES, ids=[f"{c[1]}:{' '.join(c[0][:3])}" for c in CASES])
def test_bad_input_and_unreachable(tmp_path, capsys, argv, code, words):
    tmp = str(_files(tmp_path))
    port = str(free_port())

    def fill(s: str) -> str:
        return s.replace("{tmp}", tmp).replace("{port}", port)

    rc = cli.main([fill(a) for a in argv])
    cap = capsys.readouterr()
    line = one_line(cap.err)
    assert rc == code, (rc, line)
    assert line.startswith("h2pile " + argv[0]), line
    for w in words:
        assert fill(w) in line, line


def test_argparse_usage_errors_are_2(capsys):
    assert cli.main(["flash", "--port", "x", "--no-such-option"]) == USAGE
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    assert cli.main(["provision", "--port", "x", "--pile-id", "p", "--fleet-secret", "a",
                     "--fleet-secret-file", "b"]) == USAGE  # one source of a secret at a time
    assert "not allowed with argument" in capsys.readouterr().err


def test_ctrl_c_is_130(monkeypatch, capsys):
    from host_tools import keys

    def interrupted(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(keys, "derive", interrupted)
    assert cli.main(["keys", "--fleet-secret", "s", "p1"]) == INTERRUPTED
    assert one_line(capsys.readouterr().err) == "h2pile keys: interrupted"


def test_an_unexpected_io_error_is_one_line_naming_the_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc = cli.main(["broker-config", "--fleet-secret", "s", "--piles", "A", "--out", str(blocker / "out")])
    assert rc == UNREACHABLE
    line = one_line(capsys.readouterr().err)
    assert line.startswith("h2pile broker-config: error: ") and str(blocker) in line, line
