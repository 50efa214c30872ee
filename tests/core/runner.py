# Runs the core test modules on MicroPython (pytest runs the same modules on
# CPython): every function named test_* is a test; a failure is an exception.
# The MicroPython side has no pytest, so this is the only file here that sets
# up its import path itself (MICROPYPATH from tests/core/test_on_micropython.py).
import os
import sys

# CPython only: the runner's own pytest wrapper and the hypothesis property test.
CPYTHON_ONLY = ("test_on_micropython", "test_safety_property", "test_interlocks_incremental")


def modules():
    names = [f[:-3] for f in os.listdir(".") if f.startswith("test_") and f.endswith(".py")]
    return sorted(n for n in names if n not in CPYTHON_ONLY)


def main(mods):
    passed = failed = 0
    for m in mods:
        mod = __import__(m)
        for name in sorted(dir(mod)):
            if not name.startswith("test_"):
                continue
            try:
                getattr(mod, name)()
                passed += 1
            except Exception as e:  # noqa: BLE001 - report every failure
                failed += 1
                print("FAIL %s.%s: %r" % (m, name, e))
                sys.print_exception(e)
    print("core: %d passed, %d failed (%d modules)" % (passed, failed, len(mods)))
    return failed


if __name__ == "__main__":
    sys.exit(1 if main(modules()) else 0)
