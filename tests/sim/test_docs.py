"""docs/sim.md and the generated part of docs/scenarios.md match the code."""

import os

import sim  # noqa: F401
from host_tools import sim_cmd
from sim import params as P

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_sim_md_is_generated_from_params():
    with open(os.path.join(ROOT, "docs", "sim.md")) as f:
        doc = f.read()
    assert doc == P.markdown(), "docs/sim.md is stale: run `h2pile sim docs`"
    for name, (value, text) in P.DEFAULTS.items():
        assert f"| `{name}` | {value:g} | {text} |" in doc


def test_scenarios_md_generated_section_is_current():
    with open(os.path.join(ROOT, "docs", "scenarios.md")) as f:
        doc = f.read()
    assert doc == sim_cmd.scenarios_doc(doc), "docs/scenarios.md is stale: run `h2pile sim docs`"
    from sim import faults

    for name in faults.EVENTS:
        assert f"| `{name}` |" in doc


def test_docs_check_command(tmp_path, monkeypatch, capsys):
    import argparse

    assert sim_cmd.cmd_docs(argparse.Namespace(check=True)) == 0
    stale = tmp_path / "sim.md"
    stale.write_text("old\n")
    monkeypatch.setattr(sim_cmd, "DOCS_SIM", str(stale))
    assert sim_cmd.cmd_docs(argparse.Namespace(check=True)) == 1
    assert "out of date" in capsys.readouterr().err
