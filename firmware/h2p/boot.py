# Boot: pick the board module, load and validate the board description and
# the config, then run the pile. A bad file stops here with one line naming
# the file and key; nothing is driven, so the contactor stays open (its
# controller's default) and the pile stays `off`. (main.py calls run().)
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


def _load(m):
    # Boot-only code: imported here, dropped from memory once checked.
    from h2p.schema import ConfigError
    from h2p import boardcfg, config

    try:
        desc = boardcfg.load("board.json")
        if desc["platform"] != m.PLATFORM:
            raise ConfigError(
                "board.json: key 'platform' is %r but this firmware runs on %r"
                % (desc["platform"], m.PLATFORM)
            )
        return desc, config.load("config.json")
    except ConfigError as e:
        print("CONFIG ERROR " + str(e))
        print("STATE off (not started: fix the file and reset)")
        return None, None


def run():
    m = _board_module()
    from h2p.compat import forget

    desc, cfg = _load(m)
    forget("h2p.config", "h2p.boardcfg", "h2p.schema", "h2p.registers")
    if cfg is None:
        return 2
    board = m.Board(desc, cfg["bus"]["baud"])
    forget("h2p.board")  # the interface module: read at boot, not kept
    from h2p import app

    pile = app.boot(board, cfg)
    cfg = None  # the pile copied what it needs; this frame lives as long as the pile
    return app.run_forever(pile)


