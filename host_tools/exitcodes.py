"""Exit codes of every `h2pile` command, defined once, and the error a
command raises to end with one of them.

    0  OK           done; the check passed; the pile accepted the command
    1  FAILED       the command ran and what it checked said no: `verify` NOT OK,
                    `sim run` verdict FAIL, `cmd` rejected by the pile, `bus`: nothing
                    answered or a read failed, `docs --check`/`sim docs --check`: stale
    2  USAGE        bad argument or bad input file (scenario, config, build,
                    certificate, missing or empty secret); argparse's usage errors too
    3  UNREACHABLE  a port, board, broker, simulator or pile the command needs did
                    not answer or refused the connection, or an I/O error talking to it
    4  WRONG_BOARD  `flash`: the board is not the kind the build is for
    5  NO_SPACE     `flash`, `provision`: the board's filesystem is full, or the ROM
                    image is bigger than its ROMFS partition
    6  MISMATCH     `flash`, `provision`: a sha256 does not match (read back from the
                    board, or a damaged build)
    7  BOARD_ERROR  `flash`, `provision`, `verify`: the board raised an error running
                    the tool's code
  130  INTERRUPTED  Ctrl-C

Codes 4 to 7 are kinds of failure only a board update has; a script that
only cares whether it worked tests for 0. A bug in h2pile itself ends with
Python's traceback and exit 1.
"""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3
WRONG_BOARD = 4
NO_SPACE = 5
MISMATCH = 6
BOARD_ERROR = 7
INTERRUPTED = 130


class CliError(Exception):
    """An error the user can act on: `h2pile` prints its message as one line
    (`h2pile COMMAND: error: MESSAGE`) and exits with `code`. The message
    says what was wrong and where (the option, file or port)."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code
