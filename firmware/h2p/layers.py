# The firmware's module map, defined once: every module under firmware/
# (main.py and each h2p/*.py), its layer, and what each layer may import.
# host_tools/build.py ships only the on-board layers (never host-only),
# tests/firmware/test_layers.py checks every import against the rules with
# check_source() below, and docs/architecture.md is generated from it
# (`h2pile docs`). A new module needs a row here, or that test fails.
#
# Host-only: never shipped, so nothing here costs the board RAM or flash.
# It runs on CPython only (it parses sources with ast).
import ast

HELPER = "helper"
CONTRACT = "contract"
CORE = "core"
SHELL = "shell"
BOOT_ONLY = "boot-only"
BOARD = "board"
ENTRY = "entry"
HOST_ONLY = "host-only"

ON_BOARD = (HELPER, CONTRACT, CORE, SHELL, BOOT_ONLY, BOARD, ENTRY)

# layer -> (what it is for, the layers it may import, where its tests live),
# in the order docs/architecture.md shows them.
LAYERS = {
    CONTRACT: (
        "Tables shared with the simulator, the host tools and the docs: register maps, codes, state "
        "and topic names, commands, the config schema, the signed-command encoding. Change one and "
        "everything that reads it follows. Data first; what code there is only reads the tables.",
        (HELPER, CONTRACT),
        "tests/firmware/, tests/tools/ (generated docs, host tools)"),
    CORE: (
        "Plain objects stepped with (now, readings): no I/O, no asyncio task of their own (a module "
        "whose small task only calls its pure functions counts as core), nothing that waits. "
        "Tested fast and deterministically on CPython and MicroPython alike.",
        (HELPER, CONTRACT, CORE),
        "tests/core/ (also runs on MicroPython)"),
    SHELL: (
        "The asyncio shell that moves bytes: bus, MQTT, flash journal, clock, crash handling. It "
        "steps the core and carries out what the core wants; boot-only modules it loads inside "
        "the function that needs them, then drops.",
        (HELPER, CONTRACT, CORE, SHELL, BOOT_ONLY),
        "tests/firmware/, tests/system/ (the whole pile)"),
    BOOT_ONLY: (
        "Loaded at boot (or on rare demand), used once and dropped again (h2p.compat.forget): "
        "no resident module imports one at module level.",
        (HELPER, CONTRACT, CORE, SHELL, BOOT_ONLY),
        "tests/firmware/"),
    BOARD: (
        "One module per board, behind the interface in h2p/board.py: the only modules that may "
        "import machine or network. UART, pins, watchdog, clock and network are passed in from here.",
        (HELPER, CONTRACT, BOARD),
        "tests/board/"),
    ENTRY: (
        "main.py, run by the board at boot, and h2p.start, which it runs from flash: picks the board "
        "module, validates the board description and the config, then starts the shell.",
        (HELPER, CONTRACT, BOOT_ONLY, SHELL, BOARD, ENTRY),
        "tests/board/, tests/system/"),
    HELPER: (
        "The one place MicroPython and CPython differ, the console log line and the package itself: "
        "every layer may import them; they import nothing else of the firmware.",
        (HELPER,),
        "tests/core/ (through every core test)"),
    HOST_ONLY: (
        "Kept in firmware/ so there is one source, but never shipped to a board (host_tools/build.py "
        "leaves them out): texts for people, the operator's side of signing, key derivation, this "
        "table. They may import any firmware module; no on-board module imports them.",
        (HELPER, CONTRACT, CORE, SHELL, BOOT_ONLY, BOARD, ENTRY, HOST_ONLY),
        "tests/tools/"),
}

# module -> (layer, note). "main" is firmware/main.py, "h2p" the package's
# __init__. Where a module mixes two layers the note says so; it is put in
# the stricter one (the one allowed fewer imports). Notes go into
# docs/architecture.md.
MODULES = {
    "main": (ENTRY, ""),
    "h2p.start": (ENTRY, "main.py's boot, run from flash (main.py itself is compiled into the heap)"),
    "h2p": (HELPER, "VERSION; every module's parent package"),
    "h2p.compat": (HELPER, ""),
    "h2p.log": (HELPER, ""),
    "h2p.crc": (HELPER, "the Modbus CRC, on its own so a board can compile it to machine code"),
    "h2p.codes": (CONTRACT, "on the board: read at boot (the tables, the drivers), then dropped; the build folds its codes into the modules that run"),
    "h2p.states": (CONTRACT, ""),
    "h2p.registers": (CONTRACT, "on the board: read at boot to build the drivers, then dropped"),
    "h2p.topics": (CONTRACT, "on the board: read while the uplink sets up, then dropped"),
    "h2p.cmdspec": (CONTRACT, ""),
    "h2p.sign": (CONTRACT, "mixes the encoding both sides compute (contract) with the pile's "
                           "verification (core): contract"),
    "h2p.schema": (CONTRACT, "the vocabulary of the config and board schemas; loaded at boot only"),
    "h2p.config": (CONTRACT, "mixes the config schema (contract) with its loader, run at boot only: "
                             "contract"),
    "h2p.readings": (CORE, ""),
    "h2p.devices": (CORE, ""),
    "h2p.devbuild": (CORE, "on the board: builds the drivers at boot (h2p.devices.build), then dropped"),
    "h2p.interlocks": (CORE, ""),
    "h2p.arbiter": (CORE, ""),
    "h2p.contactor": (CORE, ""),
    "h2p.energy": (CORE, "the energy manager: the stack's claim \"energy\", idle shutdown, dispatch estimate"),
    "h2p.reformer": (CORE, "the reformer loop: burner feed-forward and bed temperature feedback, the feed gate (claim \"reformer\")"),
    "h2p.supervisor": (CORE, ""),
    "h2p.billing": (CORE, "store-and-forward logic; the journal and the client's publish are passed in"),
    "h2p.cmdhandler": (CORE, "loaded per command by the uplink (not for one over the rate) and dropped after it"),
    "h2p.cmdgate": (CORE, "the command rate, on the raw bytes: resident in the uplink"),
    "h2p.link": (CORE, "mixes Keeper (core) with run(), a small task around it: core"),
    "h2p.led": (CORE, "mixes pattern()/lit() (core) with run(), a small task around them: core"),
    "h2p.app": (SHELL, ""),
    "h2p.chores": (SHELL, ""),
    "h2p.modbus": (SHELL, "asyncio master; the transport is passed in (crc16 etc. shared with the sim)"),
    "h2p.mqtt": (SHELL, ""),
    "h2p.uplink": (SHELL, ""),
    "h2p.journal": (SHELL, ""),
    "h2p.session": (SHELL, "mixes recorder logic (core-like) with the journal's file I/O: shell"),
    "h2p.crash": (SHELL, ""),
    "h2p.maintenance": (SHELL, ""),
    "h2p.sntp": (SHELL, "mixes pure request()/parse() with query(), which owns a UDP socket: shell"),
    "h2p.boardcfg": (BOOT_ONLY, ""),
    "h2p.journal_maint": (BOOT_ONLY, ""),
    "h2p.journal_compact": (BOOT_ONLY, "also on rare demand, while charging: compaction when the journal is nearly full"),
    "h2p.board": (BOARD, "the interface (for mypy) and the reset-cause file; imports no machine"),
    "h2p.board_mcu": (BOARD, ""),
    "h2p.board_esp32": (BOARD, ""),
    "h2p.board_rp2": (BOARD, ""),
    "h2p.board_unix": (BOARD, ""),
    "h2p.docs_text": (HOST_ONLY, ""),
    "h2p.topics_doc": (HOST_ONLY, ""),
    "h2p.registers_doc": (HOST_ONLY, ""),
    "h2p.signer": (HOST_ONLY, "the operator signs; the board only verifies (h2p.sign)"),
    "h2p.keys": (HOST_ONLY, "key derivation from the fleet secret: provisioning and the back office"),
    "h2p.publisher": (HOST_ONLY, "tools' and tests' publisher; the pile's uplink stamps its own"),
    "h2p.layers": (HOST_ONLY, ""),
}

# The rules check_source() enforces besides each layer's import list, for
# people (docs/architecture.md).
RULES = (
    "only `board` modules import `machine` or `network`;",
    "`core` modules import no I/O module (os, socket, select, ssl, _thread, vfs, uctypes);",
    "no on-board module imports a `host-only` one;",
    "a resident module imports a `boot-only` one inside the function that needs it, never at module "
    "level (so it can be dropped after use);",
    "imports under `if TYPE_CHECKING:` are for mypy only (they never run) and are not checked.",
)

# Only the board layer may import these.
BOARD_IMPORTS = ("machine", "network")
# I/O a core module may not import (it is stepped, it does not reach out).
IO_IMPORTS = ("os", "socket", "select", "ssl", "_thread", "vfs", "uctypes")


def ships(module):
    """True if the module goes onto a board (is compiled by host_tools/build.py)."""
    return MODULES[module][0] != HOST_ONLY


def layer_of(module):
    """The module's layer, None if the table does not name it."""
    row = MODULES.get(module)
    return row[0] if row else None


def module_name(relpath):
    """firmware-relative path -> module name: "main.py" -> "main",
    "h2p/__init__.py" -> "h2p", "h2p/app.py" -> "h2p.app"."""
    p = relpath.replace("\\", "/")
    if p.endswith("/__init__.py"):
        p = p[:-len("/__init__.py")]
    elif p.endswith(".py"):
        p = p[:-3]
    return p.replace("/", ".")


def _targets(node):
    # The modules an import statement loads: h2p.x for `from h2p import x`
    # when x is a module of the table, the package otherwise.
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = ("h2p" if node.level else "") + ("." if node.level and node.module else "") + (node.module or "")
    if base == "h2p":
        return [("h2p." + a.name) if ("h2p." + a.name) in MODULES else "h2p" for a in node.names]
    return [base]


def _type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree):
    # (line, target, at module level) for every import that runs: the
    # blocks under `if TYPE_CHECKING:` are for mypy only and never run.
    out = []

    def walk(node, top):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for c in child.orelse:
                    walk_one(c, top)
                continue
            walk_one(child, top)

    def walk_one(child, top):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for t in _targets(child):
                out.append((child.lineno, t, top))
            return
        inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        walk(child, inner)

    walk(tree, True)
    return out


def check_source(module, source, filename=None):
    """Every rule the module's imports break, as "file:line: rule" lines."""
    where = filename or module
    layer = layer_of(module)
    if layer is None:
        return ["%s:1: %s is not in the layer table (firmware/h2p/layers.py MODULES)" % (where, module)]
    allowed = LAYERS[layer][1]
    out = []
    for line, target, top in _imports(ast.parse(source, where)):
        root = target.split(".")[0]
        pre = "%s:%d: %s (%s) imports %s: " % (where, line, module, layer, target)
        if root in BOARD_IMPORTS:
            if layer not in (BOARD, HOST_ONLY):
                out.append(pre + "only board modules may import machine/network")
            continue
        if layer == CORE and root in IO_IMPORTS:
            out.append(pre + "core does no I/O (files, sockets, threads): that is the shell's")
            continue
        if root != "h2p":
            continue
        t_layer = layer_of(target)
        if t_layer is None:
            out.append(pre + "no such module in the layer table")
        elif t_layer == HOST_ONLY and layer != HOST_ONLY:
            out.append(pre + "an on-board module imports a host-only one (never shipped to a board)")
        elif t_layer not in allowed:
            out.append(pre + "%s may not import %s (allowed: %s)" % (layer, t_layer, ", ".join(allowed)))
        elif t_layer == BOOT_ONLY and layer not in (BOOT_ONLY, HOST_ONLY) and top:
            out.append(pre + "a boot-only module imported at module level stays resident: "
                       "import it inside the function that needs it")
    return out


def check_tree(files):
    """files: {firmware-relative path: source}. Every rule broken, including
    a module missing from the table or a table row without a file."""
    out = []
    seen = set()
    for rel in sorted(files):
        m = module_name(rel)
        seen.add(m)
        out += check_source(m, files[rel], "firmware/" + rel)
    for m in sorted(set(MODULES) - seen):
        out.append("firmware/h2p/layers.py: MODULES names %s: no such file under firmware/" % m)
    return out
