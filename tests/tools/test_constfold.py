"""host_tools.constfold: other modules' constants folded into a module at build time."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from host_tools import FIRMWARE, constfold

CONSTS = {"states": {"OFF": 0, "CHARGING": 6}, "codes": {"PILOT_C": 2, "NEG": -5},
          "readings": {"UNKNOWN": -0x3FFFFFFF}}


def _fold(src: str) -> str:
    return constfold.fold(src, lambda m: CONSTS.get(m, {}))


def test_an_alias_attribute_and_a_const_imported_by_name_become_their_values():
    src = ("from h2p import states as S\nfrom h2p import codes as K\nfrom h2p.readings import UNKNOWN\n"
           "def f(st, p, v):\n"
           "    return st == S.CHARGING and p == K.PILOT_C and v != UNKNOWN and -K.NEG\n")
    out = _fold(src)
    assert "return st == 6 and p == 2 and v != (-1073741823) and -(-5)\n" in out, out
    # the modules' imports go (every use folded), the name's import stays
    assert out.splitlines()[:3] == ["pass  # (folded)", "pass  # (folded)", "from h2p.readings import UNKNOWN"]
    ns: dict = {}
    exec(compile(out.replace("from h2p", "#"), "m", "exec"), ns)
    assert ns["f"](6, 2, 0) == 5 and ns["f"](5, 2, 0) is False


def test_strings_comments_other_attributes_and_keyword_names_are_left_alone():
    src = ("from h2p import states as S\nfrom h2p.readings import UNKNOWN\n"
           "x = 'S.CHARGING'  # S.OFF\n"
           "y = S.NAMES[S.OFF]\n"
           "z = obj.S.CHARGING\n"
           "w = S.MISSING\n"
           "k = call(UNKNOWN=1)\n")
    out = _fold(src).splitlines()
    assert out[2] == "x = 'S.CHARGING'  # S.OFF"
    assert out[3] == "y = S.NAMES[0]"
    assert out[4] == "z = obj.S.CHARGING"
    assert out[5] == "w = S.MISSING"
    assert out[6] == "k = call(UNKNOWN=1)"


def test_a_name_the_module_binds_again_is_not_folded():
    src = ("from h2p import states as S\nfrom h2p.readings import UNKNOWN\n"
           "def f(S):\n    return S.OFF\n"
           "def g():\n    UNKNOWN = 3\n    return UNKNOWN\n")
    assert _fold(src) == src


def test_only_public_integer_consts_of_the_module_are_folded(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from h2p.compat import const\nA = const(3)\n_B = const(4)\nC = const(A << 2)\n"
                 "D = 5\nE = const(1.5)\nF = const(-0x10)\n")
    assert constfold.public_consts(str(p)) == {"A": 3, "C": 12, "F": -16}


def test_the_firmware_folded_keeps_its_lines_and_compiles_and_the_step_looks_nothing_up():
    consts_of = constfold.firmware_consts()
    src_dir = os.path.join(FIRMWARE, "h2p")
    for name in sorted(os.listdir(src_dir)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(src_dir, name)) as f:
            src = f.read()
        out = constfold.fold(src, consts_of)
        assert len(out.splitlines()) == len(src.splitlines()), name  # crash reports name the source's lines
        compile(out, name, "exec")
    with open(os.path.join(src_dir, "supervisor.py")) as f:
        sup = constfold.fold(f.read(), consts_of)
    code = "\n".join(re.sub(r"#.*", "", ln) for ln in sup[sup.index("    def step(self"):].splitlines())
    code = code.replace("S.NAMES", "").replace("IL.NAMES", "")
    for looked_up in (r"\bS\.", r"\bK\.", r"\bIL\.EMERGENCY", r"\bIL\.STOP", r"\bUNKNOWN\b"):
        assert not re.search(looked_up, code), looked_up


def test_the_built_firmware_runs_the_folded_modules(tmp_path):
    # The unix build's supervisor.mpy holds the folded values: its
    # bytecode names no S or K any more where the source used them.
    from host_tools.build import build

    out = build("unix_sim", str(tmp_path))
    mpy = os.path.join(out, "lib", "h2p", "supervisor.mpy")
    r = subprocess.run([sys.executable, "-c", "import sys; d = open(sys.argv[1], 'rb').read(); "
                        "print(b'PILOT_C' in d, b'CHARGING' in d)", mpy], capture_output=True, text=True)
    assert r.stdout.split() == ["False", "False"], r.stdout + r.stderr


def test_a_module_that_opts_out_is_left_as_it_is():
    # h2p.registers: its rows, folded, became constants kept with its code
    # (+2 KB of heap on the unix port) instead of tuples dropped after boot.
    src = "# constfold: off\nfrom h2p import states as S\nROWS = ((\"a\", S.OFF),)\n"
    assert _fold(src) == src
    with open(os.path.join(FIRMWARE, "h2p", "registers.py")) as f:
        assert constfold.NO_FOLD in f.read()


def test_an_import_whose_every_use_was_folded_goes():
    # On a board h2p.codes is then never loaded for its constants alone
    # (~1.4 KB of heap; h2p.app drops it after boot).
    src = "from h2p import codes as K\nfrom h2p import states as S\nx = K.PILOT_C\ny = S.NAMES\n"
    out = _fold(src).splitlines()
    assert out[0] == "pass  # (folded)" and out[1] == "from h2p import states as S" and out[2] == "x = 2"


def test_the_modules_that_run_after_boot_load_no_codes_module_on_a_board():
    consts_of = constfold.firmware_consts()
    for name in ("supervisor", "devices", "devbuild", "contactor", "energy"):
        with open(os.path.join(FIRMWARE, "h2p", name + ".py")) as f:
            out = constfold.fold(f.read(), consts_of)
        assert not re.search(r"^\s*from h2p import codes\b|^\s*import h2p\.codes\b", out, re.M), name
