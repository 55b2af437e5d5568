"""Dashboard latency on PostgreSQL with 1,000,000 logged predictions (10 items each) and 100,000 views.

Seeds the database ``bench_dashboard`` on 127.0.0.1:5432 (user postgres, trust) with COPY, runs the monitoring
aggregation once over the whole backlog (what the web process's background thread does as predictions arrive),
then times every dashboard route through the Flask app, with a 7-day and a 30-day window, and once more after new
predictions and views arrived (the lazy per-call aggregation included).

    .venv/bin/python bench/dashboard.py [--predictions 1000000] [--views 100000] [--repeat 5] [--keep]

``--keep`` reuses an already seeded database (skips the load and the aggregation).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender_system.storage import migrate  # noqa: E402
from recommender_system.storage.tables import utcnow  # noqa: E402

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/bench_dashboard"
VARIANTS = 5_000
DAYS = 30
# (page, scoring model, retrieval model, share)
MIX = [
    ("HOMEPAGE", "ease", "ease", 0.20),
    ("HOMEPAGE", "popularity", "popularity", 0.10),
    ("PRODUCT_DETAIL", "gru4rec", "similarity", 0.20),
    ("PRODUCT_DETAIL", "similarity", "similarity", 0.10),
    ("CATEGORY_LIST", "ease", None, 0.15),
    ("CATEGORY_LIST", "popularity", None, 0.05),
    ("CART", "cooccurrence", "cooccurrence", 0.10),
    ("CART", "als", "similarity", 0.05),
    ("HOMEPAGE", "selection", "selection", 0.05),
]


def recreate_database() -> None:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text('DROP DATABASE IF EXISTS "bench_dashboard" WITH (FORCE)'))
        conn.execute(sa.text('CREATE DATABASE "bench_dashboard"'))
    admin.dispose()
    migrate.upgrade(URL)


def copy_frame(engine: sa.Engine, table: str, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, na_rep="\\N")
    buffer.seek(0)
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer)
        raw.commit()
    finally:
        raw.close()


def seed(engine: sa.Engine, predictions: int, views: int, now: datetime) -> None:
    rng = np.random.default_rng(42)
    skus = np.array([f"sku-{i:05d}" for i in range(VARIANTS)], dtype=object)
    stamp = now - timedelta(days=60)
    copy_frame(
        engine,
        "product_variant",
        pd.DataFrame(
            {
                "sku": skus,
                "stock_quantity": 10,
                "recommendation_weight": 1.0,
                "deleted": False,
                "created_at": stamp,
                "updated_at": stamp,
            }
        ),
    )
    ids = np.arange(1, VARIANTS + 1)
    copy_frame(
        engine,
        "product",
        pd.DataFrame({"id": ids, "published": True, "deleted": False, "created_at": stamp, "updated_at": stamp}),
    )
    copy_frame(engine, "product_product_variant", pd.DataFrame({"product_id": ids, "product_variant_sku": skus}))

    # sessions: a visit of a few predictions, 20-60 s apart, starting anywhere in the last DAYS days
    sessions = max(1, predictions * 3 // 20)
    per_session = rng.poisson(predictions / sessions - 1, sessions) + 1
    per_session[-1] += predictions - per_session.sum() if per_session.sum() < predictions else 0
    session_of = np.repeat(np.arange(sessions), per_session)[:predictions]
    starts = rng.uniform(0, DAYS * 86400 - 3600, sessions)
    first_of_session = np.repeat(np.cumsum(per_session) - per_session, per_session)[:predictions]
    step_in_session = np.arange(predictions) - first_of_session
    offsets = starts[session_of] + step_in_session * rng.uniform(20, 60, predictions)
    order = np.argsort(offsets, kind="stable")  # ids follow time, as the log writer does
    session_of, offsets = session_of[order], offsets[order]
    created = pd.to_datetime(now - timedelta(days=DAYS)) + pd.to_timedelta(offsets, unit="s")
    shares = np.array([m[3] for m in MIX])
    mix = rng.choice(len(MIX), predictions, p=shares / shares.sum())
    popularity = 1.0 / np.arange(1, VARIANTS + 1) ** 0.8
    popularity /= popularity.sum()
    top = rng.choice(VARIANTS, (predictions, 10), p=popularity)  # duplicates within a list are rare enough
    session_names = np.array([f"session-{i:07d}" for i in range(sessions)], dtype=object)

    chunk = 100_000
    started = time.perf_counter()
    for low in range(0, predictions, chunk):
        high = min(low + chunk, predictions)
        n = high - low
        part_mix = mix[low:high]
        items = skus[top[low:high]]
        log = pd.DataFrame(
            {
                "id": np.arange(low + 1, high + 1),
                "created_at": created[low:high],
                "recommendation_type": [MIX[i][0] for i in part_mix],
                "session_id": session_names[session_of[low:high]],
                "retrieval_model_name": [MIX[i][2] for i in part_mix],
                "retrieval_model_identifier": [MIX[i][2] for i in part_mix],
                "scoring_model_name": [MIX[i][1] for i in part_mix],
                "scoring_model_identifier": [MIX[i][1] for i in part_mix],
                "retrieval_duration": rng.gamma(2.0, 0.004, n),
                "scoring_duration": rng.gamma(2.0, 0.006, n),
                "ordering_duration": rng.gamma(2.0, 0.001, n),
                "returned_count": 10,
                "predicted_items": [json.dumps(list(row)) for row in items],
            }
        )
        copy_frame(engine, "prediction_log", log)
        copy_frame(
            engine,
            "prediction_log_item",
            pd.DataFrame(
                {
                    "prediction_id": np.repeat(log["id"].to_numpy(), 10),
                    "position": np.tile(np.arange(10), n),
                    "product_variant_sku": items.reshape(-1),
                    "session_id": np.repeat(log["session_id"].to_numpy(), 10),
                    "created_at": np.repeat(log["created_at"].to_numpy(), 10),
                }
            ),
        )
        print(f"  predictions {high:>9,} ({time.perf_counter() - started:.0f} s)", flush=True)

    # views: after a random prediction of a session; a third of them click one of its top 10
    anchor = np.sort(rng.choice(predictions, views, replace=False))
    clicked = rng.random(views) < 0.33
    sku_index = np.where(clicked, top[anchor, rng.integers(0, 10, views)], rng.choice(VARIANTS, views, p=popularity))
    view_at = created[anchor] + pd.to_timedelta(rng.uniform(3, 40, views), unit="s")
    copy_frame(
        engine,
        "product_detail_enter",
        pd.DataFrame(
            {
                "session_id": session_names[session_of[anchor]],
                "product_id": sku_index + 1,
                "product_variant_sku": skus[sku_index],
                "created_at": view_at,
            }
        ).sort_values("created_at"),
    )
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT setval('prediction_log_id_seq', (SELECT max(id) FROM prediction_log))"))
    print(f"  {views:,} views; load took {time.perf_counter() - started:.0f} s", flush=True)


def vacuum(engine: sa.Engine) -> float:
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def timed(client, path: str, repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.get_json())
    return seconds


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def report(client, repeat: int, now: datetime, label: str) -> dict[str, float]:
    week = f"date_from={iso(now - timedelta(days=7))}&date_to={iso(now)}"
    month = f"date_from={iso(now - timedelta(days=DAYS + 1))}&date_to={iso(now)}"
    routes = [
        ("configuration", "/dashboard/configuration"),
        ("performance 7 d", f"/dashboard/performance?{week}"),
        ("performance 31 d", f"/dashboard/performance?{month}"),
        ("training 7 d", f"/dashboard/training?{week}"),
        ("ui timeseries 7 d hourly", f"/ui/api/timeseries?{week}&bucket=hour"),
        ("ui timeseries 31 d daily", f"/ui/api/timeseries?{month}&bucket=day&group_by=page"),
    ]
    print(f"\n{label}: seconds per call (min / median / max of {repeat})")
    medians = {}
    for name, path in routes:
        seconds = timed(client, path, repeat)
        medians[name] = statistics.median(seconds)
        print(f"  {name:<26} {min(seconds):.3f} / {statistics.median(seconds):.3f} / {max(seconds):.3f}")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="reuse the seeded database")
    args = parser.parse_args()

    os.environ["RS_DATABASE_URL"] = URL
    os.environ["RS_LOG_LEVEL"] = "WARNING"
    os.environ.pop("RS_API_TOKEN", None)
    now = utcnow()
    engine = sa.create_engine(URL)
    if not args.keep:
        print(f"seeding {args.predictions:,} predictions and {args.views:,} views into bench_dashboard ...")
        recreate_database()
        seed(engine, args.predictions, args.views, now)
        print(f"VACUUM ANALYZE after the load: {vacuum(engine):.1f} s")

    from recommender_system.app import create_app
    from recommender_system.container import Container

    container = Container()
    manager = container.monitoring_manager()
    if not args.keep:
        started = time.perf_counter()
        result = manager.refresh(chunk=50_000)
        print(
            f"\naggregation of the whole backlog: {time.perf_counter() - started:.1f} s "
            f"({result.rolled_up:,} predictions rolled up, {result.views:,} views, "
            f"{result.evaluated:,} evaluations, {result.settled:,} settled)"
        )
        print(f"VACUUM ANALYZE after the aggregation (autovacuum's job): {vacuum(engine):.1f} s")
    with engine.connect() as conn:
        hits, future = conn.execute(
            sa.text("SELECT count(*) FILTER (WHERE hit), count(*) FILTER (WHERE future_hit) FROM prediction_log")
        ).one()
        total = conn.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar()
        rollups = conn.execute(sa.text("SELECT count(*) FROM monitoring_rollup")).scalar()
    print(f"log: {total:,} predictions, {hits:,} hits, {future:,} future hits; {rollups:,} rollup rows")

    app = create_app(container)
    app.config["TESTING"] = True  # no background thread: each call aggregates what is new itself
    client = app.test_client()
    now = utcnow()
    worst = report(client, args.repeat, now, "steady state")

    # new traffic since the last aggregation: the next performance call aggregates it within its budget
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO prediction_log (created_at, recommendation_type, session_id, scoring_model_name,
                    scoring_model_identifier, retrieval_model_name, retrieval_duration, scoring_duration,
                    ordering_duration, returned_count, predicted_items)
                SELECT now() AT TIME ZONE 'utc' - make_interval(secs => g * 0.1), 'HOMEPAGE', 'live-' || (g % 300),
                       'ease', 'ease', 'ease', 0.01, 0.02, 0.001, 10, '[]'
                FROM generate_series(1, 2000) AS g
                """
            )
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO prediction_log_item (prediction_id, position, product_variant_sku, session_id, created_at)
                SELECT l.id, p, 'sku-' || lpad(((l.id * 7 + p) % 5000)::text, 5, '0'), l.session_id, l.created_at
                FROM prediction_log l, generate_series(0, 9) AS p WHERE l.session_id LIKE 'live-%'
                  AND NOT EXISTS (SELECT 1 FROM prediction_log_item i WHERE i.prediction_id = l.id)
                """
            )
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO product_detail_enter (session_id, product_id, product_variant_sku, created_at)
                SELECT 'live-' || g, 1, 'sku-' || lpad((g % 5000)::text, 5, '0'), now() AT TIME ZONE 'utc'
                FROM generate_series(1, 300) AS g
                """
            )
        )
    week = f"date_from={iso(now - timedelta(days=7))}&date_to={iso(utcnow() + timedelta(minutes=1))}"
    started = time.perf_counter()
    assert client.get(f"/dashboard/performance?{week}").status_code == 200
    print(f"\nperformance 7 d right after 2,000 new predictions and 300 views: {time.perf_counter() - started:.3f} s")
    for hook in app.shutdown_hooks:
        hook()
    slowest = max(worst.values())
    print(f"\nslowest median: {slowest:.3f} s -> {'OK' if slowest < 1.0 else 'ABOVE'} the 1 s target")


if __name__ == "__main__":
    main()
