"""Generated docs match the firmware's tables; the interlock table covers
every hazard of the domain reference (docs/domain.md section 3) and reads only
readings the register maps define."""

import os
import re

import pytest

from host_tools import docs as G
from host_tools.cli import main as cli_main

from h2p import docs_text as T
from h2p import interlocks as IL
from h2p import registers as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAIN_MD = os.path.join(ROOT, "docs", "domain.md")

# domain.md section 3, hazard by hazard: the interlock rows that answer it.
# Two hazards are behaviour of the supervisor, not a condition to watch;
# they name the core test that holds them instead.
HAZARD_ROWS = {
    "hydrogen": ("h2_warn", "h2_trip"),
    "methanol": ("meoh_leak",),
    "insulation (DC output)": ("iso_warn", "iso_fault"),
    "pilot / connector": ("pilot_short",),
    "emergency stop": ("estop", "estop_chain"),
    "contactor health": ("contactor_welded", "contactor_stuck"),
    "stale data": ("comm_charger", "comm_safety", "comm_fuelcell", "comm_reformer", "comm_bms", "comm_meter"),
    "ventilation": ("vent_fail",),
    "mobile-specific": ("tilt", "door_open", "water"),
}
HAZARD_IN_CODE = {
    "EV stops (C→B) or unplugs": "test_core_supervisor.test_ev_stops_asking_opens_contactor_in_the_same_step",
    "contactor life": "test_core_supervisor.test_stop_fault_ramps_before_opening",
}
# Figures of domain.md section 2 the table must carry (row: threshold).
THRESHOLDS = {
    "h2_warn": 10.0, "h2_trip": 25.0, "bed_overtemp": 320.0, "stack_hot": 185.0,
    "stack_overtemp": 195.0, "cell_low": 0.35, "cell_trip": 0.20, "iso_warn": 500, "iso_fault": 100,
}


def _reading_names():
    names = set()
    for dev in M.DEVICE_ORDER:
        for f in M.DEVICES[dev]["readings"]:
            names.add(f[0])
    for p in M.METER_PROFILES.values():
        for f in p["fields"]:
            names.add(f[0])
    return names


@pytest.mark.parametrize("name", sorted(G.GENERATORS))
def test_committed_doc_is_generated(name):
    path = os.path.join(ROOT, "docs", name)
    assert os.path.exists(path), "docs/%s missing: run `h2pile docs --write`" % name
    with open(path, encoding="utf-8") as f:
        assert f.read() == G.GENERATORS[name](), "docs/%s is stale: run `h2pile docs --write`" % name


def test_every_interlock_reading_is_in_the_register_maps():
    known = _reading_names()
    for meter in M.METER_PROFILES.values():  # every meter profile gives every meter reading
        assert {f[0] for f in meter["fields"]} == set(M.METER_FIELDS)
    for row in IL.TABLE:
        if row[1] is not None:
            assert row[1] in known, "interlock %s reads %r: not in registers.py" % (row[0], row[1])
        else:
            assert row[2] == IL.EXT, "interlock %s has no reading but is not raised by code" % row[0]


def test_every_interlock_row_has_a_why_text_and_valid_fields():
    assert set(T.INTERLOCK_WHY) == {r[0] for r in IL.TABLE}
    for name, reading, op, thr, deb, sev, clear, when, derate in IL.TABLE:
        assert 0 <= op < len(T.OP_NAMES) and 1 <= sev <= IL.EMERGENCY, name
        assert clear in (IL.AUTO, IL.RESET) and 0 <= when < len(T.WHEN_NAMES), name
        assert deb >= 0 and (0 < derate < 100 if sev == IL.DERATE else derate == 0), name


def test_every_domain_hazard_has_a_row():
    names = {r[0] for r in IL.TABLE}
    for hazard, rows in HAZARD_ROWS.items():
        for r in rows:
            assert r in names, "hazard %r: no interlock row %r" % (hazard, r)
    # Each hazard blocks at the severity the domain asks for.
    sev = {r[0]: r[5] for r in IL.TABLE}
    assert sev["h2_trip"] == IL.EMERGENCY and sev["estop"] == IL.EMERGENCY == sev["estop_chain"]
    assert sev["iso_fault"] >= IL.STOP and sev["contactor_welded"] >= IL.STOP
    for r in HAZARD_ROWS["mobile-specific"]:
        assert sev[r] >= IL.STOP, r  # no charging
    welded = IL.TABLE[IL.ROW["contactor_welded"]]
    assert welded[6] == IL.RESET  # a weld latches
    thr = {r[0]: r[3] for r in IL.TABLE}
    for r, v in THRESHOLDS.items():
        assert thr[r] == v, (r, thr[r], v)


def test_hazard_list_matches_domain_md_section_3():
    with open(DOMAIN_MD, encoding="utf-8") as f:
        text = f.read()
    sec = text.split("## 3.")[1].split("\n## ")[0]
    hazards = [m.group(1).strip() for m in re.finditer(r"^\| ([^|]+?) \|", sec, re.M)]
    hazards = [h for h in hazards if h not in ("hazard",) and not h.startswith("---")]
    assert hazards, "no hazards parsed from domain.md section 3"
    assert set(hazards) == set(HAZARD_ROWS) | set(HAZARD_IN_CODE), hazards


def test_safety_doc_lists_every_row_with_units():
    text = G.safety_md()
    for r in IL.TABLE:
        assert "| `%s` |" % r[0] in text
    assert "≥ 25 % LEL" in text and "| 100 ms |" in text and "≤ 0.2 V" in text
    assert "< 100 Ω/V" in text and "pilot state E" in text


def test_docs_check_and_write_commands(tmp_path, capsys):
    d = str(tmp_path)
    assert cli_main(["docs", "--check", "--dir", d]) == 1
    assert "stale" in capsys.readouterr().err
    assert cli_main(["docs", "--write", "--dir", d]) == 0
    assert sorted(os.listdir(d)) == sorted(G.GENERATORS)
    assert cli_main(["docs", "--check", "--dir", d]) == 0
    with open(os.path.join(d, "states.md"), "a", encoding="utf-8") as f:
        f.write("hand edit\n")
    assert cli_main(["docs", "--check", "--dir", d]) == 1
    assert "states.md" in capsys.readouterr().err
    assert cli_main(["docs", "--print", "nope.md"]) == 2
    assert "known:" in capsys.readouterr().err
