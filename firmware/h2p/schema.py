# A tiny validator for the JSON files on the board (config, board
# description). A schema is a dict: key -> (kind, default, check, doc).
# kind is int, float, str, bool, list or a nested schema dict; default
# REQUIRED means the key must be present. Errors name the file, the key path
# and what was expected, because a technician reads them on a serial console.

REQUIRED = "<required>"
# Keys whose values are secrets: an error names the key, never the value
# (the console line ends up in logs and `h2pile verify` reports).
_SECRET = ("password", "cmd_key")


class ConfigError(Exception):
    pass


def _kind_name(kind):
    if isinstance(kind, dict):
        return "object"
    return {int: "integer", float: "number", str: "string", bool: "true/false", list: "list"}[kind]


def _type_ok(kind, v):
    if kind is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, kind)


def _shown(k, v):
    return "(secret, not shown)" if k in _SECRET else repr(v)


def validate(schema, data, where, path=""):
    # Returns a new dict with defaults filled in; raises ConfigError naming
    # the first problem. Unknown keys are errors: a typo must not silently
    # fall back to a default.
    if not isinstance(data, dict):
        raise ConfigError("%s: %s must be an object" % (where, "key '%s'" % path[:-1] if path else "top level"))
    for k in data:
        if k not in schema:
            raise ConfigError(  # %r: a key holding a quote or a newline stays one line
                "%s: unknown key %r (known: %s)"
                % (where, path + k, ", ".join(sorted(schema)))
            )
    out = {}
    for k in schema:
        kind, default, check, _doc = schema[k]
        key = path + k
        if k not in data:
            if default == REQUIRED:
                raise ConfigError("%s: missing key '%s' (%s expected)" % (where, key, _kind_name(kind)))
            if isinstance(kind, dict):
                out[k] = validate(kind, {}, where, key + ".")
            else:
                out[k] = default
            continue
        v = data[k]
        if isinstance(kind, dict):
            out[k] = validate(kind, v, where, key + ".")
            continue
        if v is None and default is None:
            out[k] = None
            continue
        if not _type_ok(kind, v):
            raise ConfigError(
                "%s: key '%s' is %s, expected %s" % (where, key, _shown(k, v), _kind_name(kind))
            )
        if check is not None:
            msg = check(v)
            if msg:
                raise ConfigError("%s: key '%s' is %s: %s" % (where, key, _shown(k, v), msg))
        out[k] = float(v) if kind is float else v
    return out


def rng(lo, hi):
    def check(v):
        if not lo <= v <= hi:  # (NaN, which JSON parsers accept, fails this too)
            return "must be between %s and %s" % (lo, hi)
        return None

    return check


def one_of(*choices):
    def check(v):
        if v not in choices:
            return "must be one of " + ", ".join(str(c) for c in choices)
        return None

    return check


def ident(v):
    # Pile ids go into MQTT topics and file names: keep them plain.
    if not 1 <= len(v) <= 32:
        return "must be 1 to 32 characters"
    for c in v:
        if not (("a" <= c <= "z") or ("0" <= c <= "9") or c in "-_"):
            return "may hold only a-z, 0-9, '-' and '_'"
    return None


def load_json(path, schema):
    import json

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("%s: cannot read (%s)" % (path, e))
    except ValueError as e:  # UnicodeError (CPython; MicroPython reads bytes as they are)
        raise ConfigError("%s: not UTF-8 text (%s)" % (path, e))
    try:
        data = json.loads(text)
    except (ValueError, RuntimeError) as e:  # RuntimeError: CPython's RecursionError (deep nesting)
        raise ConfigError("%s: not valid JSON (%s)" % (path, e))
    return validate(schema, data, path)
