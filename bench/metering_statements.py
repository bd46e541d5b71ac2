"""Monthly statements for every German municipality: time and memory.

A ledger in a fresh chDB path gets a month (November 2026, Europe/Berlin) of hourly usage
for ``--municipalities`` subjects (default 10,752, the number of Gemeinden in the Destatis
directory): per subject and hour one ingest event (readings, rows, dead-lettered) and one
query event, recorded through ``Ledger.record`` in chunks as the consumer would. Then the
clock runs over ``Statements.statements`` (drafts for all, one call) and ``Statements.freeze``
(the same plus storing them). A sample of the statements is checked against sums computed
here from the generated events.

    .venv/bin/python bench/metering_statements.py [--municipalities 10752] [--hours 744]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import date, timedelta

from urbanstack import warehouse
from urbanstack.runtime.metering.events import (API_BYTES_READ, API_QUERIES, API_ROWS_READ, DEAD_LETTERED,
                                                READINGS_INGESTED, ROWS_STORED, TYPE_INGEST, TYPE_QUERY,
                                                MeterEvent, derived_id)
from urbanstack.runtime.metering.ledger import Ledger, month_range
from urbanstack.runtime.metering.statements import Statements

MONTH = date(2026, 11, 1)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--municipalities", type=int, default=10_752)
    parser.add_argument("--hours", type=int, default=None, help="hours of the month to fill (default: all)")
    args = parser.parse_args()
    import os
    print(f"load average before the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")

    client = warehouse.connect(f"chdb://{tempfile.mkdtemp(prefix='urbanstack-bench-metering-')}")
    ledger = Ledger(client)
    subjects = [f"gemeinde-{i:05d}" for i in range(args.municipalities)]
    start, end = month_range(MONTH)
    hours = int((end - start).total_seconds() // 3600) if args.hours is None else args.hours
    # The consumer's path (dedup check + insert), timed on a day of events ...
    sample = subjects[:1000]
    began = time.perf_counter()
    recorded = 0
    for h in range(24):
        events = [MeterEvent(id=derived_id("bench-sample", subject, h), source="/bench", type=TYPE_INGEST,
                             subject=subject, time=start + timedelta(hours=h), dataset="t/d",
                             quantities={READINGS_INGESTED: 1, ROWS_STORED: 1, DEAD_LETTERED: 0})
                  for subject in sample]
        recorded += ledger.record(events).new
    took = time.perf_counter() - began
    print(f"Ledger.record: {recorded:,} events in {took:.1f} s ({recorded / took:,.0f} events/s, chunks of "
          f"{len(sample):,}, dedup check included)")
    client.command(f"TRUNCATE TABLE `{ledger.database}`.`events`")
    client.command(f"TRUNCATE TABLE `{ledger.database}`.`hourly`")
    # ... and the month for every municipality generated in the warehouse (through the same view).
    n = args.municipalities
    began = time.perf_counter()
    client.command(
        f"INSERT INTO `{ledger.database}`.`events` (id, type, source, subject, time, dataset, meters, quantities, "
        f"fingerprint, rank) SELECT concat('bench-', toString(number)), '{TYPE_INGEST}', '/bench', "
        f"concat('gemeinde-', leftPad(toString(number % {n}), 5, '0')), "
        f"toDateTime64('{start:%Y-%m-%d %H:%M:%S}', 3, 'UTC') + toIntervalHour(intDiv(number, {n})) "
        f"+ toIntervalMinute(17), 't/d', ['{READINGS_INGESTED}', '{ROWS_STORED}', '{DEAD_LETTERED}', "
        f"'{API_QUERIES}', '{API_ROWS_READ}', '{API_BYTES_READ}'], "
        f"[r, r, 0, 3, 3000, 90000], '', 0 FROM (SELECT number, toUInt64(((number % {n}) * 7 + "
        f"intDiv(number, {n}) * 13) % 2001) AS r FROM numbers({n * hours}))",
        settings={"max_insert_block_size": 1_000_000})
    filled = time.perf_counter() - began
    print(f"ledger: {n * hours:,} events ({n:,} municipalities × {hours} hours, 6 meters each) generated in "
          f"{filled:.1f} s")
    # Expected rows_stored of a few municipalities, from the same formula evaluated here.
    expected = {subjects[i]: sum((i * 7 + h * 13) % 2001 for h in range(hours)) for i in range(0, n, max(n // 20, 1))}

    print(f"peak RSS after generating (chDB engine included): {rss_mib():,.0f} MiB")
    statements = Statements(ledger)
    began = time.perf_counter()
    drafts = statements.statements(subjects, MONTH, now=end + timedelta(days=1))
    drafted = time.perf_counter() - began
    began = time.perf_counter()
    frozen = statements.freeze(subjects, MONTH, now=end + timedelta(days=6))
    froze = time.perf_counter() - began
    for subject, rows in expected.items():
        assert drafts[subject].used(ROWS_STORED) == rows, subject
        assert frozen[subject].used(ROWS_STORED) == rows and frozen[subject].hash == frozen[subject].content_hash()
    print(f"statements (drafts) for {len(drafts):,} municipalities: {drafted:.1f} s")
    print(f"freeze (drafts + content hash + store) for {len(frozen):,}: {froze:.1f} s")
    print(f"peak RSS after the statements: {rss_mib():,.0f} MiB")
    print(f"load average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
