# The fuzz corpus (tests/fuzz/corpus/) replayed on MicroPython: the firmware
# runs there, and its json, str and hash differ from CPython's (a config that
# is no UTF-8 raised UnicodeError on the board). One line per input:
#   <target> <file> <outcome>      outcome: ok, or the rejection
# and "CRASH <exception>" for anything raised that the target's contract
# does not allow. Last line: "crashes N".
# Usage: micropython mp_fuzz_corpus.py CORPUS_DIR WORK_DIR
import os
import sys

from h2p import cmdgate, cmdhandler, config
from h2p.journal import Journal
from h2p.modbus import Master, ModbusError
from h2p.schema import ConfigError

CORPUS, WORK = sys.argv[1], sys.argv[2]
crashes = 0


def files(target):
    d = CORPUS + "/" + target
    for name in sorted(os.listdir(d)):
        with open(d + "/" + name, "rb") as f:
            yield name, f.read()


def rm(p):
    try:
        os.remove(p)
    except OSError:
        pass


class Clock:
    t = 0

    def ms(self):
        return self.t

    async def sleep_ms(self, ms):
        self.t += ms


class Line:
    def __init__(self, reply, clock):
        self.reply = reply
        self.clock = clock
        self.pending = b""

    def discard(self):
        self.pending = b""

    async def settle(self):
        pass

    async def send(self, buf, n):
        self.pending = self.reply

    async def recv_into(self, mv, timeout_ms):
        if not self.pending:
            self.clock.t += timeout_ms
            return 0
        k = min(len(mv), len(self.pending))
        mv[:k] = self.pending[:k]
        self.pending = self.pending[k:]
        return k


def drive(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration as s:
        return s.value


def modbus(data):
    unit, fc, addr, count = data[0], data[1], data[2] << 8 | data[3], data[4]
    clock = Clock()
    m = Master(Line(data[5:], clock), clock)
    try:
        if fc in (3, 4):
            drive(m.read(unit, fc, addr, count))
        else:
            drive(m.write(unit, addr, list(range(count)), count))
        return "ok"
    except ModbusError as e:
        return e.kind


def command(data):
    # the command memory as h2p.uplink makes it (_CMD_TABLE, _CMD_INTS)
    from array import array
    a = cmdhandler.handle(data, 1800000000, "p1", "00" * 32, (), (bytearray(320), array("i", bytes(4 * 83))),
                          cmdgate.peek(data, b'"op"'))
    return a["reason"]


def conf(data):
    p = WORK + "/config.json"
    with open(p, "wb") as f:
        f.write(data)
    try:
        config.load(p)
        return "ok"
    except ConfigError as e:
        return str(e)[len(p) + 2:][:60]


def journal(data):
    p = WORK + "/j.bin"
    rm(p)
    rm(p + ".tmp")
    with open(p, "wb") as f:
        f.write(data)
    r = Journal(p, 1 << 20, 60, 1024).open()
    again = Journal(p, 1 << 20, 60, 1024).open()
    if again["repaired"]:
        raise AssertionError("repaired twice")
    return "%d records, %d torn, %d garbage runs" % (r["records"], r["torn_bytes"], len(r["garbage"]))


for target, fn in (("modbus", modbus), ("cmdhandler", command), ("config", conf), ("journal", journal)):
    for name, data in files(target):
        try:
            out = fn(data)
        except Exception as e:  # noqa: BLE001 - every crash is reported
            crashes += 1
            out = "CRASH %r" % (e,)
        print(target, name, out)
print("crashes", crashes)
