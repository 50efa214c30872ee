"""`h2pile verify`: reset a board and report what its firmware says: version
and file hashes against SHA256SUMS, free storage, the config, then the boot
report the firmware prints (BOOT line: heap, where the code runs from), and
its self-test. The last line before the verdict lists every check and its
result, a check that could not run included ("self-test NOT RUN"). Exit 0
only when every check ran and passed (the self-test too), 1 (FAILED)
otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TextIO

from host_tools.exitcodes import FAILED, OK, USAGE
from host_tools.flash.layout import PREV, ROM_ENTRY, finish_switch, fw_hashes, parse_sums
from host_tools.flash.session import Board, FlashError

# What main.py prints when it can not start the firmware as built.
_STOPS = ("CONFIG ERROR", "NO ROM IMAGE", "UNSUPPORTED")


def verify(port: str, timeout: float = 20.0, baud: int = 115200, out: TextIO | None = None) -> int:
    """Print the report; OK (0) when the board is fine, FAILED (1) with the problems on stderr."""
    out = out or sys.stdout
    from h2p import config
    from h2p.schema import ConfigError

    b = Board(port, baud)
    problems: list[str] = []
    # (check, result) in the order they ran; a result other than "ok"/"pass" fails verify
    checks: list[tuple[str, str]] = []
    try:
        if finish_switch(b):
            print("finished a switch-over an interruption had left half done", file=out)
        plat = b.board_platform()
        version = (b.read_text("VERSION") or "").strip()
        text = b.read_text("SHA256SUMS")
        print(f"board:    {port} ({plat})", file=out)
        if not text:
            raise FlashError(f"{port}: no h2pile firmware on the board (no SHA256SUMS): run `h2pile flash`",
                             USAGE)
        sums = parse_sums(text)
        files = sorted(sums)
        bad = [f for f, h in zip(files, fw_hashes(b, "", files)) if h != sums[f]]
        in_rom = ROM_ENTRY in sums
        print(f"firmware: {version or '?'} ({len(files)} files{', code: the ROM image' if in_rom else ''}, "
              f"{'all sha256 ok' if not bad else 'DAMAGED: ' + ', '.join(bad[:3])})", file=out)
        checks.append(("firmware files", "DAMAGED" if bad else "ok"))
        if bad:
            problems.append("firmware files damaged: reflash")
        has_prev = b.exists(PREV + "/SHA256SUMS")
        bsize, blocks, free = b.free()
        print(f"storage:  {free * bsize // 1024} KB free of {blocks * bsize // 1024} KB"
              f"{'; previous firmware kept for rollback' if has_prev else ''}", file=out)
        text = b.read_text("config.json")
        if text is None:
            print("config:   none (run `h2pile provision`)", file=out)
            problems.append("not provisioned")
            checks.append(("config", "NONE"))
        else:
            try:
                c = config.from_dict(json.loads(text), "config.json")
                m = c["mqtt"]
                print(f"config:   pile {c['pile_id']}, bus {c['bus']['baud']} baud, meter "
                      f"{c['meter_profile']}, mqtt {m['host'] or 'off'}"
                      f"{':%d' % m['port'] if m['host'] else ''}{' tls' if m['tls'] else ''}"
                      f"{', wifi ' + c['wifi']['ssid'] if c['wifi']['ssid'] else ''}", file=out)
                checks.append(("config", "ok"))
            except (ValueError, ConfigError) as e:
                print(f"config:   INVALID: {e}", file=out)
                problems.append("config.json invalid: re-provision")
                checks.append(("config", "INVALID"))
        # Reset and watch the firmware's own boot report.
        done = re.compile(r"^(CONFIG ERROR|UNSUPPORTED|LOG event \S+ selftest (pass|fail)"
                          r"|\w*(Error|Exception|Interrupt)\b)")
        lines = b.soft_reset_and_read(timeout, lambda t: bool(done.match(t)))
        boot = None
        for t in lines:
            if t.startswith("BOOT "):
                try:
                    boot = json.loads(t[5:])
                except ValueError:
                    pass
        cfg_err = [t for t in lines if t.startswith(_STOPS)]
        selftest = [t for t in lines if re.match(r"^LOG event \S+ selftest ", t)]
        trace = [i for i, t in enumerate(lines) if t.startswith("Traceback")]
        checks.append(("boot", "ok" if boot and not cfg_err and not trace else
                       "CRASHED" if trace else next(k for k in _STOPS if cfg_err[0].startswith(k)) if cfg_err
                       else "NO BOOT LINE"))
        if boot:
            print(f"boot:     h2pile {boot.get('version')} on {boot.get('board')}, pile "
                  f"{boot.get('pile')}, reset cause {boot.get('reset')}, heap free "
                  f"{boot.get('heap_free', 0) // 1024} KB (used {boot.get('heap_used', 0) // 1024} KB)",
                  file=out)
            # Where the bytecode runs from decides which heap figure applies
            # (docs/field.md, "Which board runs code from where").
            code = boot.get("code")
            print("code:     " + {"rom": "ROM image in flash (runs in place)",
                                  "ram": ".mpy files loaded into the heap"}.get(code, "? (%r)" % (code,))
                  + f", MicroPython {boot.get('mpy', '?')}", file=out)
            if in_rom:
                checks.append(("code from ROM", "ok" if code == "rom" else "NO"))
            if in_rom and code != "rom":
                problems.append("the ROM image is on the board but the code did not run from it")
        for t in cfg_err:
            print("boot:     " + t, file=out)
            problems.append(t)
        if trace:
            # The traceback's last line says what failed.
            tail = [t for t in lines[trace[0]:] if t.strip()][-1]
            print("boot:     crashed: " + tail, file=out)
            problems.append("crashed: " + tail)
        if selftest:
            parts = selftest[-1].split()
            res = parts[4] if len(parts) > 4 else "?"
            why = " (" + " ".join(parts[5:]) + ")" if res == "fail" and parts[5:] else ""
            print("selftest: " + res + why,
                  file=out)
            checks.append(("self-test", res if res == "pass" else res.upper()))
            if res != "pass":
                problems.append("self-test failed")
        else:
            # No verdict is not a pass: the board may be fine, but nothing
            # showed it (no bus devices, a crash or a config error first).
            checks.append(("self-test", "NOT RUN"))
            if boot and not cfg_err and not trace:
                last = [t for t in lines if t and not t.startswith(("STATUS ", "BOOT ", "LOG boot"))]
                print(f"selftest: NOT RUN: not finished within {timeout:g} s (waiting for the bus devices"
                      f"{'; last: ' + last[-1][:100] if last else ''})", file=out)
                problems.append("the self-test did not finish within %g s" % timeout)
            else:
                print("selftest: NOT RUN: the firmware did not get that far", file=out)
                problems.append("the self-test did not run")
        if not boot and not cfg_err and not trace:
            shown = [t for t in lines if t.strip()][-3:]
            problems.append("no BOOT line within %g s" % timeout)
            print(f"boot:     no BOOT line within {timeout:g} s; console said: "
                  f"{' | '.join(shown) if shown else 'nothing'}", file=out)
    finally:
        b.close()
    print("checks:   " + ", ".join("%s %s" % c for c in checks), file=out)
    if problems:
        print(f"{port}: NOT OK: " + "; ".join(problems), file=sys.stderr)
        return FAILED
    print(f"{port}: OK ({len(checks)} checks ran and passed)", file=out)
    return OK
