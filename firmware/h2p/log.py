# A tiny logging helper (no framework): one line per event on the console,
# prefixed so the runner and tests can pick lines out of a mixed stream.
def log(kind, *parts):
    print("LOG " + kind + " " + " ".join(str(p) for p in parts))
