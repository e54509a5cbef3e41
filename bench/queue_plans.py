"""The queue's filtered pages on a database: the plan of each, and its time alone.

An operator's check, beside ``run.py``: HTTP req/s on a shared machine moves with whatever
else runs, while the statement's plan and its time on one connection show directly whether
a filtered page reads the same few rows with a million requests as with a thousand.

    .venv/bin/python bench/queue_plans.py sqlite:////var/tmp/bench-1m.db
    .venv/bin/python bench/queue_plans.py postgresql://postgres@127.0.0.1:5432/bench_1m

For each filter it prints the plan (``EXPLAIN QUERY PLAN`` on SQLite, ``EXPLAIN (ANALYZE,
BUFFERS)`` on PostgreSQL) and the median and p90 time of the first page (20 rows), the
statement the service runs, over ``--runs`` executions.
"""

from __future__ import annotations

import argparse
import statistics
import time

import sqlalchemy as sa

from support_requests.storage import support_desk
from support_requests.storage.database import sync_url
from support_requests.storage.support_desk import REQUEST_COLUMNS, QueueFilters

# The values bench/run.py's queue scenarios filter by (rows bench/preload.py writes).
FILTERS = {
    "platform=android": QueueFilters(platform="android"),
    "appVersion=4.7.2": QueueFilters(app_version="4.7.2"),
    "tag=bug-ios": QueueFilters(tag="bug-ios"),
    "rated=true": QueueFilters(rated=True),
    "maxScore=2": QueueFilters(max_score=2),
}
PAGE = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("--runs", type=int, default=200, help="executions timed per filter")
    args = parser.parse_args()
    engine = sa.create_engine(sync_url(args.database_url))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        for name, filters in FILTERS.items():
            listing = support_desk._queue_listing(filters)
            statement, parameters = listing.statement(REQUEST_COLUMNS, PAGE, None)
            compiled = statement.compile(dialect=engine.dialect)
            values = compiled.construct_params(parameters)
            bound = tuple(values[n] for n in compiled.positiontup or ()) if sqlite else values
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
            plan = connection.exec_driver_sql(explain + compiled.string, bound).all()
            lines = [str(row[-1]) if sqlite else str(row[0]) for row in plan]
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                connection.exec_driver_sql(compiled.string, bound).all()
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            p90 = times[int(len(times) * 0.9)]
            print(f"{name}: median {statistics.median(times):.3f} ms, p90 {p90:.3f} ms")
            print("    " + "\n    ".join(lines))
    engine.dispose()


if __name__ == "__main__":
    main()
