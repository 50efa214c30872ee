"""main.py refuses a MicroPython older than the oldest it supports (1.23.0,
the image in ../shared/mcu) with one line, before anything is driven."""

import importlib.util
import os
import types

from tests.helpers.fwbuild import ROOT


def _main_module():
    spec = importlib.util.spec_from_file_location("h2p_main", os.path.join(ROOT, "firmware", "main.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def test_too_old_micropython_is_refused_with_one_line(monkeypatch, capsys):
    m = _main_module()
    monkeypatch.setattr(m.sys, "implementation", types.SimpleNamespace(name="micropython", version=(1, 22, 2)))
    called = []
    monkeypatch.setattr(m, "_mount_flash", lambda: called.append("mount"))
    assert m.main() == 2
    out = capsys.readouterr().out
    assert "UNSUPPORTED MicroPython 1.22.2: h2pile needs 1.23.0 or newer" in out
    assert called == []  # nothing else ran


def test_oldest_supported_version_passes_the_check(monkeypatch, capsys):
    m = _main_module()
    monkeypatch.setattr(m.sys, "implementation", types.SimpleNamespace(name="micropython", version=(1, 23, 0)))
    monkeypatch.setattr(m, "_mount_flash", lambda: (_ for _ in ()).throw(RuntimeError("reached boot")))
    try:
        m.main()
    except RuntimeError as e:
        assert str(e) == "reached boot"
    assert "UNSUPPORTED" not in capsys.readouterr().out
