"""The layer table (firmware/h2p/layers.py) covers every firmware module, every
import keeps its layer's rules, and the build ships exactly the on-board
modules. The checker is shown to be live on sources that break each rule."""

import os

import pytest

from h2p import layers as LY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")


def _firmware_files():
    out = {}
    for d, _dirs, names in os.walk(FIRMWARE):
        for n in names:
            if n.endswith(".py"):
                p = os.path.join(d, n)
                with open(p, encoding="utf-8") as f:
                    out[os.path.relpath(p, FIRMWARE)] = f.read()
    return out


def test_every_firmware_module_keeps_its_layer_rules():
    files = _firmware_files()
    assert "main.py" in files and "h2p/supervisor.py" in files
    bad = LY.check_tree(files)
    assert not bad, "\n".join(bad)


def test_every_layer_is_described_and_every_module_has_one():
    assert {row[0] for row in LY.MODULES.values()} <= set(LY.LAYERS)
    for layer, (text, allowed, tests) in LY.LAYERS.items():
        assert text and tests and set(allowed) <= set(LY.LAYERS), layer
        assert LY.HELPER in allowed, layer  # compat and log are for everyone
        assert (LY.HOST_ONLY in allowed) == (layer == LY.HOST_ONLY), layer
    assert set(LY.ON_BOARD) | {LY.HOST_ONLY} == set(LY.LAYERS)


# (module, synthetic source, what the report must say, line)
VIOLATIONS = [
    ("h2p.supervisor", "import gc\nimport machine\n", "only board modules may import machine/network", 2),
    ("h2p.app", "def f():\n    import network\n", "only board modules may import machine/network", 2),
    ("h2p.uplink", "from h2p import topics_doc\n", "imports a host-only one", 1),
    ("h2p.app", "def f():\n    from h2p.docs_text import STATE_DOC\n", "imports a host-only one", 2),
    ("h2p.interlocks", "from h2p.app import boot\n", "core may not import shell", 1),
    ("h2p.registers", "from h2p import readings\n", "contract may not import core", 1),
    ("h2p.board_unix", "from h2p.supervisor import Supervisor\n", "board may not import core", 1),
    ("h2p.contactor", "import os\n", "core does no I/O", 1),
    ("h2p.app", "\n\nfrom h2p import boardcfg\n", "boot-only module imported at module level", 3),
    ("h2p.devices", "from h2p import nonexistent_mod\n", None, 0),  # an attribute of the package: allowed
    ("h2p.devices", "import h2p.nonexistent_mod\n", "no such module in the layer table", 1),
    ("h2p.nonexistent_mod", "x = 1\n", "is not in the layer table", 1),
]


@pytest.mark.parametrize("module,source,rule,line", VIOLATIONS)
def test_checker_reports_module_line_and_rule(module, source, rule, line):
    bad = LY.check_source(module, source, "firmware/x.py")
    if rule is None:
        assert bad == []
        return
    assert len(bad) == 1, bad
    assert bad[0].startswith("firmware/x.py:%d: " % line), bad
    assert module in bad[0] and rule in bad[0], bad


def test_checker_allows_what_the_rules_allow():
    ok = [
        ("h2p.app", "from h2p import supervisor, states\nfrom h2p.compat import const\nimport os\n"),
        ("h2p.journal", "def f():\n    from h2p import journal_maint\n"),
        ("h2p.board_esp32", "import machine\nfrom h2p.board_mcu import McuBoard\n"),
        ("h2p.docs_text", "from h2p import app, board_mcu, topics\n"),
        # mypy-only imports never run on the board
        ("h2p.app", "TYPE_CHECKING = 0\nif TYPE_CHECKING:\n    from h2p.board import Board\n"),
    ]
    for module, source in ok:
        assert LY.check_source(module, source) == [], (module, source)
    # ...but the else branch of that `if` does run
    bad = LY.check_source("h2p.app", "if TYPE_CHECKING:\n    pass\nelse:\n    from h2p.board import Board\n")
    assert len(bad) == 1 and "shell may not import board" in bad[0]


def test_table_and_files_must_name_the_same_modules():
    files = _firmware_files()
    extra = dict(files, **{"h2p/newthing.py": "x = 1\n"})
    bad = LY.check_tree(extra)
    assert bad == ["firmware/h2p/newthing.py:1: h2p.newthing is not in the layer table "
                   "(firmware/h2p/layers.py MODULES)"]
    del files["h2p/arbiter.py"]
    bad = LY.check_tree(files)
    assert bad == ["firmware/h2p/layers.py: MODULES names h2p.arbiter: no such file under firmware/"]


def test_module_names():
    assert LY.module_name("main.py") == "main"
    assert LY.module_name("h2p/__init__.py") == "h2p"
    assert LY.module_name("h2p/app.py") == "h2p.app"


def _file(module):
    return "__init__" if module == "h2p" else module[len("h2p."):]


def test_build_ships_exactly_the_on_board_modules(fw_build):
    lib = os.path.join(fw_build, "lib", "h2p")
    got = {n[:-len(".mpy")] for n in os.listdir(lib) if n.endswith(".mpy")}
    host_only = {_file(m) for m, (layer, _note) in LY.MODULES.items() if layer == LY.HOST_ONLY}
    assert host_only >= {"docs_text", "topics_doc", "layers"}
    assert not host_only & got, host_only & got
    # every other module is there, of the board modules only this board's
    on_board = {_file(m) for m, (layer, _note) in LY.MODULES.items()
                if layer != LY.HOST_ONLY and m != "main"}
    assert got == on_board - {"board_esp32", "board_rp2", "board_mcu"}
    with open(os.path.join(fw_build, "SHA256SUMS")) as f:
        sums = f.read()
    with open(os.path.join(fw_build, "manifest.py")) as f:
        manifest = f.read()
    for m in host_only:
        assert "/%s.mpy" % m not in sums and '"%s.py"' % m not in manifest, m
    for m in got:
        assert "lib/h2p/%s.mpy" % m in sums and '"%s.py"' % m in manifest, m
    assert '"board_esp32.py"' not in manifest  # the manifest freezes this board's modules only


def test_esp32_ships_the_mcu_board_modules():
    from host_tools import build

    names = build.shipped("esp32")
    assert "board_esp32.py" in names and "board_mcu.py" in names
    assert "board_unix.py" not in names and "board_rp2.py" not in names
    assert "docs_text.py" not in names and "keys.py" not in names
