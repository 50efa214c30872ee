"""`h2pile bus scan | read | write`: check the pile's RS-485 line from a
laptop with a USB-RS-485 adapter (Modbus RTU master via pymodbus).

    h2pile bus scan  --port /dev/ttyUSB0 [--range 1-247] [--baud 115200]
    h2pile bus read  --port /dev/ttyUSB0 [--device charger | --unit 4] [--meter sdm630]
    h2pile bus write --port /dev/ttyUSB0 chg_limit_a=12.5 --yes

Register names, addresses, types and scales come from firmware/h2p/
registers.py, the same table the firmware polls with. Disconnect the pile's
controller (or stop it) first: two masters on one line garble each other.
Exit codes (host_tools/exitcodes.py): 0 ok, 1 nothing answered, a read or
write failed, or a write not confirmed with --yes; 2 bad input; 3 the serial
port cannot be opened or fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO, cast

from h2p import registers as R
from host_tools.exitcodes import FAILED, OK, UNREACHABLE, USAGE, CliError

EXC_NAMES = {1: "illegal function", 2: "illegal address", 3: "illegal value", 4: "device failure",
             6: "busy", 10: "gateway path unavailable", 11: "gateway target failed"}
# A register as h2p.registers lists it: (name, address, type, scale).
Field = tuple[str, int, int, float]


class BusError(CliError):
    def __init__(self, msg: str, code: int = USAGE) -> None:
        super().__init__(msg, code)


def decode(words: list[int], typ: int, scale: float) -> float:
    """Register words -> physical value (the firmware's decode, host side)."""
    if typ == R.U16:
        raw = words[0]
    elif typ == R.I16:
        raw = words[0] - 0x10000 if words[0] & 0x8000 else words[0]
    elif typ == R.U32:
        raw = (words[0] << 16) | words[1]
    else:
        raw = struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0]
    return raw * scale


def fmt(v: float, scale: float = 1) -> str:
    if v != v:
        return "nan"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return "%.6g" % v


class Line:
    """A Modbus RTU master on a serial port, with one-line errors."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 0.1) -> None:
        import serial

        self.port = port
        # Open once with pyserial first: its error says what is wrong.
        try:
            serial.Serial(port, baud, timeout=0).close()
        except (serial.SerialException, OSError, ValueError) as e:
            msg = str(e)
            if not os.path.exists(port):
                msg = "no such device (is the USB-RS-485 adapter plugged in? see `ls /dev/ttyUSB*`)"
            raise BusError(f"{port}: cannot open the serial port: {msg}", UNREACHABLE)
        from pymodbus.client import ModbusSerialClient

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.c = ModbusSerialClient(port, baudrate=baud, timeout=timeout, retries=0)
        if not self.c.connect():
            raise BusError(f"{port}: cannot open the serial port", UNREACHABLE)

    def close(self) -> None:
        self.c.close()

    def _call(self, fn: Callable[..., Any], *a: Any, **k: Any) -> tuple[list[int] | bool | None, str | None]:
        """Returns (registers or True, None) or (None, 'timeout' / exception text)."""
        from pymodbus.exceptions import ModbusException

        try:
            r = fn(*a, **k)
        except ModbusException as e:
            text = str(e)
            return None, "no answer" if "No response" in text or "timeout" in text.lower() else text
        except OSError as e:
            raise BusError(f"{self.port}: serial port error: {e}", UNREACHABLE)
        if r.isError():
            code = getattr(r, "exception_code", 0)
            return None, "exception %d (%s)" % (code, EXC_NAMES.get(code, "?"))
        return getattr(r, "registers", True), None

    def read(self, unit: int, fc: int, addr: int, count: int) -> tuple[list[int] | None, str | None]:
        f = self.c.read_input_registers if fc == 4 else self.c.read_holding_registers
        return cast("tuple[list[int] | None, str | None]", self._call(f, addr, count=count, device_id=unit))

    def write(self, unit: int, addr: int, words: list[int]) -> tuple[bool | None, str | None]:
        if len(words) == 1:
            return cast("tuple[bool | None, str | None]",
                        self._call(self.c.write_register, addr, words[0], device_id=unit))
        return cast("tuple[bool | None, str | None]",
                    self._call(self.c.write_registers, addr, list(words), device_id=unit))


def device_fields(dev: str, meter: str) -> list[tuple[str, int, tuple[Field, ...]]]:
    """[(kind, fc, fields)] for a device: readings and commands."""
    if dev == "meter":
        prof = R.METER_PROFILES[meter]
        return [("reading", prof["fc"], prof["fields"])]
    d = R.DEVICES[dev]
    out = []
    if d["readings"]:
        out.append(("reading", 4, d["readings"]))
    if d["commands"]:
        out.append(("command", 3, d["commands"]))
    return out


def spans(fields: Iterable[Field], max_gap: int = 8) -> list[list[Any]]:
    """Group fields into block reads (few, large reads as the firmware does)."""
    fs = sorted(fields, key=lambda f: f[1])
    groups: list[list[Any]] = []  # [first address, end address, [fields]]
    for f in fs:
        end = f[1] + R.TYPE_WORDS[f[2]]
        if groups and f[1] - groups[-1][1] <= max_gap and end - groups[-1][0] <= 64:
            groups[-1][1] = max(groups[-1][1], end)
            groups[-1][2].append(f)
        else:
            groups.append([f[1], end, [f]])
    return groups


def parse_range(text: str) -> tuple[int, int]:
    try:
        if "-" in text:
            a, b = text.split("-", 1)
            lo, hi = int(a), int(b)
        else:
            lo = hi = int(text)
    except ValueError:
        raise BusError(f"--range {text!r}: expected N or LO-HI, e.g. 1-247")
    if not 1 <= lo <= hi <= 247:
        raise BusError(f"--range {text!r}: unit ids are 1..247")
    return lo, hi


def default_units() -> dict[int, str]:
    return {R.DEVICES[d]["unit"]: d for d in R.DEVICE_ORDER}


def scan(line: Line, lo: int, hi: int, out: TextIO | None = None) -> list[int]:
    """Units that answer (a reply or a Modbus exception both count)."""
    out = out or sys.stdout
    names = default_units()
    found = []
    for unit in range(lo, hi + 1):
        # Any reply counts, an exception too (a unit without register 0).
        regs, err = line.read(unit, 3, 0, 1)
        if regs is None and err == "no answer":
            continue
        found.append(unit)
        who = names.get(unit)
        default = "  (default unit of the %s: %s)" % (who, R.DEVICES[who]["title"]) if who else ""
        exc = "" if regs is not None else "  [" + str(err) + "]"
        print("unit %3d  answers%s%s" % (unit, default, exc), file=out)
    return found


def read_device(line: Line, dev: str, unit: int, meter: str, out: TextIO | None = None) -> int:
    """Print every register of a device by name; returns the number of failed reads."""
    out = out or sys.stdout
    title = R.DEVICES[dev]["title"] + (" [%s]" % meter if dev == "meter" else "")
    print("%s (unit %d): %s" % (dev, unit, title), file=out)
    failed = 0
    for kind, fc, fields in device_fields(dev, meter):
        for lo, hi, group in spans(fields):
            regs, err = line.read(unit, fc, lo, hi - lo)
            if regs is None:
                failed += 1
                for name, addr, typ, scale in group:
                    print("  %-16s %-7s 0x%04X FC%02d  -- %s" % (name, kind, addr, fc, err), file=out)
                continue
            for name, addr, typ, scale in group:
                words = regs[addr - lo: addr - lo + R.TYPE_WORDS[typ]]
                v = decode(words, typ, scale)
                print("  %-16s %-7s 0x%04X FC%02d  %s" % (name, kind, addr, fc, fmt(v, scale)), file=out)
    return failed


def find_register(name: str) -> tuple[str, Field]:
    try:
        return R.find_command(name)
    except KeyError:
        pass
    readings = [f[0] for d in R.DEVICE_ORDER for f in R.DEVICES[d]["readings"]]
    if name in readings or name in R.METER_FIELDS:
        raise BusError(f"{name} is a reading, not a command: only command registers can be written")
    raise BusError(f"unknown command register {name!r} (commands: {', '.join(R.command_names())})")


# ---- CLI -----------------------------------------------------------------------
def _units_arg(a: argparse.Namespace) -> list[tuple[str, int]]:
    if a.device and a.device not in R.DEVICES:
        raise BusError(f"--device {a.device!r}: one of {', '.join(R.DEVICE_ORDER)}")
    if a.meter not in R.METER_PROFILES:
        raise BusError(f"--meter {a.meter!r}: one of {', '.join(sorted(R.METER_PROFILES))}")
    if a.unit is not None and not 1 <= a.unit <= 247:
        raise BusError(f"--unit {a.unit}: unit ids are 1..247")
    if a.unit is not None and not a.device:
        d = default_units().get(a.unit)
        if d is None:
            raise BusError(f"--unit {a.unit} is not a default unit: also give --device NAME")
        return [(d, a.unit)]
    if a.device:
        return [(a.device, a.unit or R.DEVICES[a.device]["unit"])]
    return [(d, R.DEVICES[d]["unit"]) for d in R.DEVICE_ORDER]


def _run(a: argparse.Namespace) -> int:
    line = None
    try:
        if a.bus_cmd == "write":
            # Check the request before touching the line.
            if "=" not in a.assignment:
                raise BusError(f"{a.assignment!r}: expected REGISTER=VALUE, e.g. chg_limit_a=12.5")
            name, _, val = a.assignment.partition("=")
            dev, field = find_register(name.strip())
            try:
                value = float(val)
            except ValueError:
                raise BusError(f"{name}={val!r}: the value must be a number")
            _, addr, typ, scale = field
            words = R.encode(value, typ, scale)
            unit = a.unit or R.DEVICES[dev]["unit"]
            if a.device and a.device != dev:
                raise BusError(f"{name} is a register of the {dev}, not the {a.device}")
            back = decode(words, typ, scale)
            if R.encode(back, typ, scale) != words or abs(back - value) > abs(scale):
                raise BusError(f"{name}={val}: out of range for a {R.TYPE_NAMES[typ]} register "
                               f"with scale {scale}")
            what = "%s=%s on the %s (unit %d, register 0x%04X, raw %s)" % (
                name, fmt(value, scale), dev, unit, addr, words)
            if not a.yes:
                print("would write " + what + ": not written; add --yes to write it "
                      "(make sure the pile's controller is stopped)")
                return FAILED
            line = Line(a.port, a.baud, a.timeout)
            ok, err = line.write(unit, addr, words)
            if ok is None:
                raise BusError(f"{name}: {err}", FAILED)
            regs, err = line.read(unit, 3, addr, len(words))
            if regs:
                print("wrote " + what + "; read back " + fmt(decode(regs, typ, scale), scale))
            else:
                print("wrote " + what + "; read-back failed: " + str(err))
            return OK
        line = Line(a.port, a.baud, a.timeout)
        if a.bus_cmd == "scan":
            lo, hi = parse_range(a.range)
            found = scan(line, lo, hi)
            print("%d unit(s) answered in %d..%d at %d baud" % (len(found), lo, hi, a.baud))
            return OK if found else FAILED
        failed = 0
        for dev, unit in _units_arg(a):
            failed += read_device(line, dev, unit, a.meter)
        return FAILED if failed else OK
    finally:
        if line:
            line.close()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bus", help="check the RS-485 line with a USB adapter (scan, read, write)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bs = p.add_subparsers(dest="bus_cmd", metavar="scan|read|write", required=True)

    def common(q: argparse.ArgumentParser, timeout: float) -> None:
        q.add_argument("--port", required=True, help="serial device of the USB-RS-485 adapter")
        q.add_argument("--baud", type=int, default=115200, help="line speed (default 115200)")
        q.add_argument("--timeout", type=float, default=timeout, help="seconds to wait for a reply")
        q.set_defaults(func=_run)

    q = bs.add_parser("scan", help="list the unit ids that answer")
    common(q, 0.05)
    q.add_argument("--range", default="1-247", help="unit ids to try, N or LO-HI (default 1-247)")
    for name, h in (("read", "read and decode registers by name"), ("write", "write one command register")):
        q = bs.add_parser(name, help=h)
        common(q, 0.3)
        q.add_argument("--unit", type=int, help="unit id (default: the device's default unit)")
        q.add_argument("--device", help="device: " + ", ".join(R.DEVICE_ORDER))
        q.add_argument("--meter", default="sdm630",
                       help="meter profile: " + ", ".join(sorted(R.METER_PROFILES)))
        if name == "write":
            q.add_argument("assignment", metavar="REGISTER=VALUE",
                           help="e.g. chg_limit_a=12.5 (physical units)")
            q.add_argument("--yes", action="store_true",
                           help="really write (otherwise only show what would be written)")
