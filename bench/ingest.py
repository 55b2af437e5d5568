"""Ingest throughput and latency against the real server under gunicorn, on SQLite and on PostgreSQL.

For each backend: a fresh migrated database, ``python -m recommender_system serve`` on a free port, then
ProductDetailEnter events (uuid4 session ids, demo-style SKUs, no timestamps, as the storefront sends them)
through ``POST /store_objects``:

- latency of single-event calls from one client (p50 / p99), then
- events per second for batches of 1, 100 and 1000 from ``--clients`` keep-alive client threads.

Targets (issue 2): >= 16,000 events/s for batches of 1000 on PostgreSQL, p99 of a single-event call <= 10 ms.

    .venv/bin/python bench/ingest.py [--backends sqlite,postgresql] [--clients 4] [--workers 2] [--threads 8]

PostgreSQL: the database ``bench_ingest`` is (re)created on ``--pg-url``'s server (default
postgresql+psycopg2://postgres@127.0.0.1:5432/postgres, trust auth).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recommender_system.storage import migrate  # noqa: E402

PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "bench_ingest"


# ------------------------------------------------------------------------------------------- payloads
class Payloads:
    """Realistic storefront events: sessions of a few views each, SKUs of a 1,500-movie catalogue."""

    def __init__(self, seed: int = 7) -> None:
        self.random = random.Random(seed)
        self.sessions = [str(uuid.UUID(int=self.random.getrandbits(128), version=4)) for _ in range(5000)]

    def event(self) -> dict[str, object]:
        movie = self.random.randint(1, 1500)
        language, resolution = self.random.choice(("cs", "en")), self.random.choice(("720p", "1080p"))
        return {
            "_model_class": "ProductDetailEnter",
            "session_id": self.random.choice(self.sessions),
            "user_id": None,
            "product_id": movie,
            "product_variant_sku": f"{movie}-{language}-{resolution}",
        }

    def bodies(self, batch: int, count: int) -> list[bytes]:
        return [json.dumps([self.event() for _ in range(batch)]).encode() for _ in range(count)]


# --------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m recommender_system serve`` in its own process group, stopped by that group's id."""

    def __init__(self, database_url: str, workers: int, threads: int, log: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "RS_DATABASE_URL": database_url,
            "RS_SERVER_HOST": "127.0.0.1",
            "RS_SERVER_PORT": str(self.port),
            "RS_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        env.pop("RS_API_TOKEN", None)
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recommender_system", "serve", "--workers", str(workers), "--threads", str(threads)],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/ready")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# --------------------------------------------------------------------------------------------- client
def post_all(port: int, bodies: list[bytes], latencies: list[float] | None = None) -> None:
    """POST every body over one keep-alive connection; every answer must be 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json"}
    for body in bodies:
        start = time.perf_counter()
        connection.request("POST", "/store_objects", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if latencies is not None:
            latencies.append(time.perf_counter() - start)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
    connection.close()


def throughput(port: int, bodies: list[bytes], clients: int) -> float:
    """Seconds to post all bodies from ``clients`` threads (bodies dealt round-robin)."""
    shares = [bodies[i::clients] for i in range(clients)]
    errors: list[BaseException] = []

    def run(share: list[bytes]) -> None:
        try:
            post_all(port, share)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


# ------------------------------------------------------------------------------------------- backends
def fresh_database(backend: str, directory: Path, pg_server: str) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{directory / 'bench_ingest.db'}"
    else:
        admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{PG_DATABASE}"'))
        admin.dispose()
        url = sa.make_url(pg_server).set(database=PG_DATABASE).render_as_string(hide_password=False)
    migrate.upgrade(url)
    return url


def stored_events(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM product_detail_enter")).scalar_one()
    engine.dispose()
    return int(count)


def run_backend(backend: str, args: argparse.Namespace, directory: Path) -> dict[str, float]:
    url = fresh_database(backend, directory, args.pg_url)
    server = Server(url, args.workers, args.threads, directory / f"server-{backend}.log")
    payloads = Payloads()
    results: dict[str, float] = {}
    sent = 0
    try:
        server.wait_ready()
        post_all(server.port, payloads.bodies(1, 50) + payloads.bodies(1000, 2))  # warm-up: imports, pools
        sent += 50 + 2000

        latencies: list[float] = []
        singles = payloads.bodies(1, args.single_calls)
        post_all(server.port, singles, latencies)
        sent += len(singles)
        results["p50_ms"] = statistics.median(latencies) * 1000
        results["p99_ms"] = percentile(latencies, 0.99) * 1000

        for batch, count in ((1, args.requests_1), (100, args.requests_100), (1000, args.requests_1000)):
            bodies = payloads.bodies(batch, count)
            elapsed = throughput(server.port, bodies, args.clients)
            sent += batch * count
            results[f"events_per_s_{batch}"] = batch * count / elapsed
    finally:
        server.stop()
    stored = stored_events(url)
    if stored != sent:
        raise RuntimeError(f"{backend}: {sent} events sent, {stored} stored")
    results["stored"] = stored
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--clients", type=int, default=4, help="client threads for the throughput runs")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--single-calls", type=int, default=1000, help="sequential single-event calls (latency)")
    parser.add_argument("--requests-1", type=int, default=2000)
    parser.add_argument("--requests-100", type=int, default=200)
    parser.add_argument("--requests-1000", type=int, default=60)
    parser.add_argument("--pg-url", default=PG_SERVER, help="a PostgreSQL server URL (its database is not used)")
    args = parser.parse_args()

    print(f"ingest benchmark: {args.workers} gunicorn workers x {args.threads} threads, {args.clients} clients")
    header = ("p50 1-event", "p99 1-event", "ev/s b=1", "ev/s b=100", "ev/s b=1000")
    print(f"{'backend':<11} {header[0]:>12} {header[1]:>12} {header[2]:>10} {header[3]:>11} {header[4]:>12}")
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        for backend in args.backends.split(","):
            r = run_backend(backend.strip(), args, Path(tmp))
            print(
                f"{backend:<11} {r['p50_ms']:>10.2f}ms {r['p99_ms']:>10.2f}ms {r['events_per_s_1']:>10,.0f} "
                f"{r['events_per_s_100']:>11,.0f} {r['events_per_s_1000']:>12,.0f}   ({int(r['stored']):,} stored)",
                flush=True,
            )


if __name__ == "__main__":
    main()
