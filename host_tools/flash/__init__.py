"""`h2pile flash | provision | verify`: put the firmware on a board, give it
its identity, and check that it boots.

    h2pile flash --port /dev/ttyUSB0 --board esp32_generic
    h2pile flash --port /dev/ttyUSB0 --rollback
    h2pile provision --port /dev/ttyUSB0 --pile-id p-0042 --fleet-secret-file fleet.key \\
        --wifi-file site-wifi.txt --broker mqtt.example.net:8883 --tls --ca fleet-ca.pem
    h2pile verify --port /dev/ttyUSB0

One job per module:

    cli.py          the options and help of the three commands
    session.py      the board's raw REPL over its serial port, with the agent loaded (Board, FlashError)
    board_agent.py  the MicroPython program the session defines on the board
    layout.py       where a firmware lives on the board; the switch-over /next/ -> live -> /prev/
    hostbuild.py    the build on this computer, checked against its SHA256SUMS
    romfs.py        the ROMFS partition: check rom.img, find, hash and write the partition
    update.py       `flash`: copy, check, switch over; `--rollback`
    progress.py     the progress bar
    provision.py    `provision`: config.json and the derived keys
    verify.py       `verify`: the report after a reset

Any problem ends with one line on stderr and an exit code from
host_tools.exitcodes; the board keeps the firmware it had.
"""
