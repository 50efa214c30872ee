# Board entry point: pick the board module, load and validate the board
# description and the config (h2p.boardcfg.load_both), then run the pile. A
# bad file stops here with one line naming the file and key; nothing is
# driven, so the contactor stays open (its controller's default) and the
# pile stays `off`. Kept small: main.py is compiled into the heap at boot and
# stays there; the rest of the firmware runs from flash.
import sys


def _mount_flash():
    # A board with a ROMFS partition mounts it at /rom by itself. The unix
    # board's flash is an image the launcher (host_tools/unix_flash.py) maps
    # read-only outside the GC heap and names in H2P_ROM: mounted here, the
    # firmware's bytecode runs from it in place, as from a board's flash.
    try:
        from os import getenv

        spec = getenv("H2P_ROM")
    except ImportError:
        return
    if spec:
        import uctypes
        import vfs

        addr, size = spec.split(":")
        vfs.mount(vfs.VfsRom(uctypes.bytearray_at(int(addr), int(size))), "/rom")
        sys.path.insert(0, "/rom")


def _board_module():
    p = sys.platform
    if p == "esp32":
        from h2p import board_esp32 as m
    elif p == "rp2":
        from h2p import board_rp2 as m
    else:
        from h2p import board_unix as m
    return m


def main():
    # The oldest MicroPython the firmware runs on: 1.23.0 (checked on the
    # official Pico W image, ../shared/mcu; README "Boards").
    v = sys.implementation.version
    if sys.implementation.name == "micropython" and v < (1, 23, 0):
        print("UNSUPPORTED MicroPython %d.%d.%d: h2pile needs 1.23.0 or newer; flash a newer MicroPython" % v[:3])
        print("STATE off (not started)")
        return 2
    _mount_flash()
    try:
        import h2p  # noqa: F401 - is the code there?
    except ImportError:
        # No code in /rom or lib/: a flash was cut off writing the ROM image
        # (docs/field.md). Run the .mpy files a flash left in prev/lib, if any.
        # (Kept short: main.py is compiled into the heap.)
        print("NO ROM IMAGE: running prev/lib")
        sys.path.append("prev/lib")
    m = _board_module()
    from h2p.compat import forget
    from h2p import boardcfg

    desc, cfg = boardcfg.load_both(m.PLATFORM)
    boardcfg = None  # (a reference here would keep the schemas in the heap)
    forget("h2p.config", "h2p.boardcfg", "h2p.schema", "h2p.registers")
    if cfg is None:
        return 2
    board = m.Board(desc, cfg["bus"]["baud"])
    forget("h2p.board")  # the interface module: read at boot, not kept
    from h2p import app

    pile = app.boot(board, cfg)
    cfg = None  # the pile copied what it needs; this frame lives as long as the pile
    return app.run_forever(pile)


if __name__ == "__main__":
    rc = main()
    # On a board, sys.exit would soft-reboot into the same error in a loop;
    # leave the technician at the REPL instead. The unix port exits.
    if sys.platform not in ("esp32", "rp2"):
        sys.exit(rc)
