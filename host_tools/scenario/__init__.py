"""Scenarios: a TOML file of timed or conditional events and the checks
that must hold at the end, run headless against the simulator and the
firmware (host_tools.pilerun.PileRun). The format is in docs/scenarios.md;
the command line is `h2pile sim run | check` (host_tools/sim_cmd.py).

    from host_tools.scenario.loader import load
    from host_tools.scenario.runner import run
    sc = load("tests/scenarios/ev_stop_latency.toml")   # ScenarioError if bad
    result = asyncio.run(run(sc, log_path="x.jsonl"))
    result.passed, result.checks  # [(ok, "one line"), ...]

One job per module:

    model.py       Scenario, Event, Latency, ScenarioError
    durations.py   '12m30s' -> seconds
    condition.py   the condition language (`when`, `until`)
    loader.py      read and check a scenario file
    runner.py      run it: simulator + firmware, events injected
    records.py     the merged log of a run, as JSON lines
    verdict.py     the [expect] checks over the log; Result
    markdown.py    the generated part of docs/scenarios.md
"""
