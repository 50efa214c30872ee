# The ESP32 port's API surface for the board double (machine.py, network.py
# here), read from esp32_surface.jsonl: generated from micropython-esp32-stubs
# by host_tools/esp32_surface.py, never edited by hand. Runs on MicroPython
# in the firmware's heap (the runner adds the double's measured cost to the
# 96K, tests/helpers/esp32_run.py): only the lines of the classes the double
# implements are parsed, and per class only a string of its member names and
# the constructor's keywords are kept.
import json

_PATH = __file__.rsplit("/", 1)[0] + "/esp32_surface.jsonl" if "/" in __file__ else "esp32_surface.jsonl"
SOURCE = "?"


def load(module, names):
    # {None: module entry, "UART": class entry, ...} for the names asked for.
    global SOURCE
    out = {}
    heads = {}
    for n in names:
        heads['{"module":"%s","name":"%s"' % (module, n) if n else '{"module":"%s","name":null' % module] = n
    with open(_PATH) as f:
        for line in f:
            if line.startswith('{"source"'):
                SOURCE = json.loads(line)["source"]
                continue
            for h, n in heads.items():
                if line.startswith(h) and line[len(h)] == ",":
                    out[n] = json.loads(line)
    for n in names:
        if n not in out:
            raise ImportError("esp32 double: %s.%s is not in %s" % (module, n, _PATH))
    return out


class Surface:
    # What one class (or the module itself) has on the ESP32 port.
    def __init__(self, owner, entry):
        self.owner = owner  # "machine.UART", "machine", ...
        members = entry.get("methods") or entry.get("funcs") or {}
        self.names = " " + " ".join(list(members) + list(entry["consts"]) + entry.get("classes", [])) + " "
        init = members.get("__init__")
        self.init_kw = " " + " ".join(init["kw"]) + " " if init else " "
        self.init_pos = init["pos"] if init else 0
        # Only strings and ints stay (the parsed entry is ~4 KB a class on
        # the 64-bit port): set_consts() takes the constants from `entry`.
        self.entry = entry

    def has(self, name):
        return (" " + name + " ") in self.names

    def missing(self, name):
        # Called for a name the double does not define: say whether the
        # real port has it (the double lacks it) or not (firmware bug).
        if self.has(name):
            raise NotImplementedError("esp32 double: %s.%s exists on the ESP32 port but the double "
                                      "does not implement it" % (self.owner, name))
        raise AttributeError("%s has no attribute '%s' on the ESP32 port (per %s)"
                             % (self.owner, name, SOURCE))

    def check_call(self, args, kw, skip=0):
        # The constructor's positional count and keywords, per the stubs.
        if self.init_pos >= 0 and len(args) > self.init_pos:
            raise TypeError("%s() takes at most %d positional arguments on the ESP32 port"
                            % (self.owner, self.init_pos))
        for k in kw:
            if (" " + k + " ") not in self.init_kw:
                raise TypeError("%s(): unexpected keyword argument '%s' (not on the ESP32 port, per %s)"
                                % (self.owner, k, SOURCE))

    def check_class(self, cls, extra=()):
        # The double itself may not offer what the port lacks: every public
        # member it defines must be on the surface (extra: stream-protocol
        # hooks MicroPython calls, which a C object has as slots, not names).
        for n in dir(cls):
            if n.startswith("_") or n in extra:
                continue
            if not self.has(n):
                raise ImportError("esp32 double defines %s.%s, which the ESP32 port lacks" % (self.owner, n))

    def set_consts(self, target):
        # Constants with the stubs' values (target: a class or a module's
        # globals()); those without a value stay unset, so reading one fails
        # instead of inventing a number.
        for k, v in self.entry["consts"].items():
            if v is not None:
                if isinstance(target, dict):
                    target[k] = v
                else:
                    setattr(target, k, v)
        self.entry = None


def check_module(surface, glb):
    for n, v in glb.items():
        if n.startswith("_"):
            continue
        if not surface.has(n):
            raise ImportError("esp32 double defines %s.%s, which the ESP32 port lacks" % (surface.owner, n))
