# The boot after main.py: pick the board module, load and validate the
# board description and the config, build the board and the pile, run it.
# Here and not in main.py, which is compiled into the heap at boot and kept
# there for as long as the pile runs (~1 KB more on the unix port); this
# runs from flash like the rest of the firmware.
import sys


def _board_module():
    p = sys.platform
    if p == "esp32":
        from h2p import board_esp32 as m
    elif p == "rp2":
        from h2p import board_rp2 as m
    else:
        from h2p import board_unix as m
    return m


def run():
    # -> the exit code (a bad board description or config: 2).
    m = _board_module()
    from h2p.compat import forget
    from h2p import boardcfg

    desc, cfg = boardcfg.load_both(m.PLATFORM)
    boardcfg = None  # (a reference here would keep the schemas in the heap)
    forget("h2p.config", "h2p.boardcfg", "h2p.schema", "h2p.registers")
    if cfg is None:
        return 2
    board = m.Board(desc, cfg["bus"]["baud"])
    desc = None  # the board copied what it needs; this frame lives as long as the pile
    forget("h2p.board")  # the interface module: read at boot, not kept
    from h2p import app

    pile = app.boot(board, cfg)
    cfg = None  # the pile copied what it needs; this frame lives as long as the pile
    return app.run_forever(pile)

