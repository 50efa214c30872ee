# Runs the core test modules on MicroPython (pytest runs the same modules on
# CPython): every function named test_* is a test; a failure is an exception.
import sys

MODULES = ("test_core_modbus", "test_core_interlocks", "test_core_arbiter",
           "test_core_supervisor", "test_core_config", "test_core_devices", "test_core_link", "test_core_led",
           "test_core_sntp", "test_core_rates")


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
    print("core: %d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if main(MODULES) else 0)
