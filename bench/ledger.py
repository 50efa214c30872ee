"""Bills per second through `h2pile ledger ingest` (not part of `make bench`).

    python -m bench.ledger [--bills 1000]

One paho client publishes N bills at QoS 1 (seven piles) to a private
mosquitto; the figure is the time until every bill/ack is back, with one
ingest and with three sharing the stream (--share), on SQLite (WAL,
synchronous=FULL) and on a private PostgreSQL cluster (tests/helpers/postgres.py:
fsync off, so an upper bound for a real server's disk). Each bill is one
committed transaction and one broker round trip before its PUBACK.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from tests.helpers.ledger_broker import Ingest, Mosquitto, Pile, record
from tests.helpers.postgres import Cluster


def run(n: int) -> list[tuple[str, int, float, bool]]:
    out = []
    cluster = Cluster().start()
    try:
        for kind in ("sqlite", "postgresql"):
            for members in (1, 3):
                d = tempfile.mkdtemp(prefix="h2pile-bench-ledger-")
                url = "sqlite:///%s/ledger.db" % d if kind == "sqlite" else cluster.create_db()
                with Mosquitto(d) as broker:
                    ingests = [Ingest(broker.port, url, share="bench" if members > 1 else None)
                               for _ in range(members)]
                    pile = Pile(broker.port)
                    t0 = time.monotonic()
                    for i in range(1, n + 1):
                        pid = "P%d" % (i % 7)
                        pile.publish(pid, record(pid, 1, i, 1.0))
                    ok = pile.wait_acks(n, 300)
                    out.append((kind, members, time.monotonic() - t0, ok))
                    pile.close()
                    for ing in ingests:
                        ing.kill()
                shutil.rmtree(d, ignore_errors=True)
    finally:
        cluster.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bills", type=int, default=1000)
    n = ap.parse_args().bills
    for kind, members, dt, ok in run(n):
        print("%-10s %d ingest%s: %d bills in %.2f s = %4.0f bills/s%s"
              % (kind, members, "s" if members > 1 else " ", n, dt, n / dt, "" if ok else "  NOT ALL ACKED"))


if __name__ == "__main__":
    main()
