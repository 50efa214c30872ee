# Board entry point: check the MicroPython version, mount the firmware's
# flash, then h2p.start picks the board module, loads and validates the
# board description and the config (h2p.boardcfg.load_both) and runs the
# pile. A bad file stops there with one line naming the file and key;
# nothing is driven, so the contactor stays open (its controller's default)
# and the pile stays `off`. Kept small: main.py is compiled into the heap at
# boot and stays there; the rest of the firmware runs from flash.
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
    # The rest of the boot runs from flash (h2p.start): what is compiled
    # here stays in the heap for as long as the pile runs.
    from h2p import start

    return start.run()


if __name__ == "__main__":
    rc = main()
    # On a board, sys.exit would soft-reboot into the same error in a loop;
    # leave the technician at the REPL instead. The unix port exits.
    if sys.platform not in ("esp32", "rp2"):
        sys.exit(rc)
