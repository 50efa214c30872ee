"""What the fuzz targets share: the time budget, the corpus, the memory bound.

Budget: each target runs a fixed number of generated examples, derandomized
(the same inputs on every run, so CI is reproducible and a failure
reappears). `H2PILE_FUZZ_EXAMPLES=N` runs N per target, with a random
seed, to hunt longer locally (`make fuzz`).

Corpus: tests/fuzz/corpus/<target>/ holds inputs worth keeping (valid seeds,
and every input that once crashed a parser), replayed as explicit examples
on every run. With `H2PILE_FUZZ_SAVE=1` (`make fuzz`) an input that fails a
check is written there as found-<hash>.bin, to be reviewed and committed.
"""

import hashlib
import os
import tracemalloc
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings

CORPUS = Path(__file__).resolve().parent / "corpus"

_ENV = os.environ.get("H2PILE_FUZZ_EXAMPLES")
LONG = bool(_ENV)
SAVE = os.environ.get("H2PILE_FUZZ_SAVE") == "1"


def budget(ci_examples):
    """Hypothesis settings for one target: ci_examples in CI (derandomized,
    no example database, no deadline: the machine is shared), or
    H2PILE_FUZZ_EXAMPLES with a random seed."""
    return settings(
        max_examples=int(_ENV) if LONG else ci_examples,
        deadline=None,
        derandomize=not LONG,
        database=None,
        # no "explain" phase: its tracing allocates inside the measured call
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
    )


def corpus(target):
    """[(name, bytes)] of tests/fuzz/corpus/<target>/, sorted by name."""
    d = CORPUS / target
    if not d.is_dir():
        raise AssertionError("no corpus directory %s" % d)
    return [(p.name, p.read_bytes()) for p in sorted(d.iterdir()) if p.is_file()]


def corpus_params(target):
    """pytest.param per corpus file, named after the file."""
    import pytest

    return [pytest.param(data, id=name) for name, data in corpus(target)]


def keep(target, data, check):
    """Run check(data); with H2PILE_FUZZ_SAVE=1 an input that fails it is
    written to the target's corpus before the failure propagates, as
    found-<failure>.bin: one file per failure (exception type and the line
    it came from), overwritten while hypothesis shrinks, so the smallest
    input is what stays."""
    try:
        check(data)
    except Exception as e:
        if SAVE:
            import traceback

            last = traceback.extract_tb(e.__traceback__)[-1]
            what = "%s:%s:%s" % (type(e).__name__, os.path.basename(last.filename), last.lineno)
            d = CORPUS / target
            d.mkdir(parents=True, exist_ok=True)
            (d / ("found-%s.bin" % hashlib.sha256(what.encode()).hexdigest()[:10])).write_bytes(data)
        raise


class Peak:
    """tracemalloc's peak of one call: `with Peak() as p: ...; p.bytes`.
    Tracing is started once per test (started() below), the peak is reset
    per call, so one example costs no start/stop."""

    def __enter__(self):
        if not tracemalloc.is_tracing():
            raise AssertionError("Peak() outside started(): tracemalloc is not tracing")
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc):
        self.bytes = tracemalloc.get_traced_memory()[1] - self._base
        return False


class started:
    """Context: tracemalloc running for a test's examples."""

    def __enter__(self):
        self._was = tracemalloc.is_tracing()
        if not self._was:
            tracemalloc.start()
        return self

    def __exit__(self, *exc):
        if not self._was:
            tracemalloc.stop()
        return False
