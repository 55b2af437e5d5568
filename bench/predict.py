"""Throughput and latency of ``POST /predict`` and ``/predict/product_positions`` under the real server.

For each backend (SQLite file, PostgreSQL database ``bench_predict``) it migrates a fresh database, loads the
ecoseller demo (``python -m recommender_system load-demo``), starts ``python -m recommender_system serve``
(gunicorn), and drives it with ``wrk`` (a Lua script cycling through realistic request bodies, shaped as the
live backend sends them: comma-joined ``variants``, demo session ids, ``user_id`` null, extra keys) for
``--duration`` seconds per page type and concurrency. It prints requests/s, p50/p95/p99 latency, errors (socket
errors and non-2xx), and the server's CPU time per request (all gunicorn processes; the load generator shares the
machine). After a clean shutdown it checks that every answered prediction reached the prediction log.

    .venv/bin/python bench/predict.py                       # both backends, concurrency 1 and 8, 20 s each
    .venv/bin/python bench/predict.py --backends sqlite --duration 5 --concurrency 8

Needs ``wrk`` (``apt-get install -y wrk``) and, for PostgreSQL, a server at ``--postgres`` (trust auth).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import sqlalchemy as sa

from recommender_system.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PAGES = ("HOMEPAGE", "PRODUCT_DETAIL", "CART", "CATEGORY_LIST", "PRODUCT_POSITIONS")

LUA = """
local bodies = {%(bodies)s}
local path = "%(path)s"
local counter = 0
local headers = {["Content-Type"] = "application/json"}

request = function()
  counter = counter + 1
  return wrk.format("POST", path, headers, bodies[(counter %% #bodies) + 1])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"p50":%%d,"p95":%%d,"p99":%%d,"max":%%d,"mean":%%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
"""


def run(command: list[str], env: dict[str, str]) -> None:
    subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def prepare_database(backend: str, workdir: Path, postgres: str, train: bool) -> str:
    """A fresh, migrated database with the ecoseller demo loaded (and, with ``train``, the learned models trained
    by ``python -m trainer --once`` into ``workdir/artefacts``); returns its URL."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
    else:
        admin = sa.create_engine(f"{postgres}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text('DROP DATABASE IF EXISTS "bench_predict" WITH (FORCE)'))
            conn.execute(sa.text('CREATE DATABASE "bench_predict"'))
        admin.dispose()
        url = f"{postgres}/bench_predict"
    env = {
        **os.environ,
        "RS_DATABASE_URL": url,
        "RS_LOG_LEVEL": "WARNING",
        "RS_ARTEFACT_DIR": str(workdir / "artefacts"),
    }
    started = time.perf_counter()
    run([PYTHON, "-m", "recommender_system", "migrate"], env)
    run([PYTHON, "-m", "recommender_system", "load-demo", "--quiet"], env)
    print(f"  {backend}: migrated and demo loaded in {time.perf_counter() - started:.1f} s", flush=True)
    if train:
        started = time.perf_counter()
        run([PYTHON, "-m", "trainer", "--once"], env)
        print(f"  {backend}: learned models trained in {time.perf_counter() - started:.1f} s", flush=True)
    return url


def request_bodies(url: str, count: int, seed: int = 0) -> dict[str, list[str]]:
    """Bodies per page, shaped as the live ecoseller backend sends them, over the demo's sessions and products."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        sessions = [row[0] for row in conn.execute(sa.text("SELECT id FROM shop_session ORDER BY id"))]
        relations = conn.execute(
            sa.text("SELECT product_id, product_variant_sku FROM product_product_variant ORDER BY 1, 2")
        ).all()
        categories = [row[0] for row in conn.execute(sa.text("SELECT DISTINCT category_id FROM product"))]
        ancestors = [row[0] for row in conn.execute(sa.text("SELECT DISTINCT ancestor_id FROM category_ancestor"))]
    engine.dispose()
    products: dict[int, list[str]] = {}
    for product_id, sku in relations:
        products.setdefault(product_id, []).append(sku)
    product_list = sorted(products.items())
    skus = [sku for _, sku in relations]
    category_ids = sorted({c for c in categories + ancestors if c is not None})
    rng = random.Random(seed)

    def common() -> dict[str, object]:
        return {"session_id": rng.choice(sessions), "user_id": None}

    def body(page: str) -> dict[str, object]:
        if page == "HOMEPAGE":
            return {"recommendation_type": page, **common(), "limit": 10}
        if page == "PRODUCT_DETAIL":
            product_id, variants = rng.choice(product_list)
            return {
                "recommendation_type": page, **common(), "limit": 10, "product_id": product_id,
                "variants": ",".join(variants), "country": "cz", "pricelist": "CZK_retail",
            }  # fmt: skip
        if page == "CART":
            cart = rng.sample(skus, rng.randint(0, 3))
            return {"recommendation_type": page, **common(), "limit": 10, "variants_in_cart": ",".join(cart)}
        if page == "CATEGORY_LIST":
            return {"recommendation_type": page, **common(), "limit": 10, "category_id": rng.choice(category_ids)}
        return {"recommendation_type": "CATEGORY_LIST", **common(), "category_id": rng.choice(category_ids)}

    return {page: [json.dumps(body(page)) for _ in range(count)] for page in PAGES}


def lua_script(workdir: Path, page: str, bodies: list[str]) -> Path:
    path = "/predict/product_positions" if page == "PRODUCT_POSITIONS" else "/predict"
    quoted = ",\n".join(f"[==[{b}]==]" for b in bodies)
    script = workdir / f"{page.lower()}.lua"
    script.write_text(LUA % {"bodies": quoted, "path": path})
    return script


class Server:
    """``python -m recommender_system serve`` in its own process group."""

    def __init__(
        self, url: str, port: int, workers: int | None, threads: int, artefacts: Path, worker_class: str | None = None
    ) -> None:
        env = {
            **os.environ,
            "RS_DATABASE_URL": url,
            "RS_ARTEFACT_DIR": str(artefacts),
            "RS_SERVER_HOST": "127.0.0.1",
            "RS_SERVER_PORT": str(port),
            "RS_LOG_LEVEL": "WARNING",
            **({"RS_WEB_WORKER_CLASS": worker_class} if worker_class else {}),
        }
        self.base = f"http://127.0.0.1:{port}"
        command = [PYTHON, "-m", "recommender_system", "serve", "--threads", str(threads)]
        if workers:
            command += ["--workers", str(workers)]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("the server did not become ready within 60 s")

    def cpu_seconds(self) -> float:
        """User + system CPU of the gunicorn master and its workers so far."""
        try:
            master = psutil.Process(self.process.pid)
            processes = [master, *master.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self) -> None:
        """A clean shutdown: SIGTERM to the gunicorn master, which stops its workers gracefully."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def drive(server: Server, script: Path, concurrency: int, duration: float) -> dict[str, float]:
    before = server.cpu_seconds()
    seconds = max(1, round(duration))
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), server.base]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = server.cpu_seconds() - before
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[key] for key in ("connect", "read", "write", "status", "timeout"))
    result["cpu_ms"] = 1000.0 * cpu / max(result["requests"], 1)
    return result


def logged_predictions(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = int(conn.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar_one())
    engine.dispose()
    return count


def bench_backend(backend: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, object]]:
    url = prepare_database(backend, workdir, args.postgres, args.train)
    bodies = request_bodies(url, args.bodies)
    scripts = {page: lua_script(workdir, page, bodies[page]) for page in args.pages}
    server = Server(url, args.port, args.workers, args.threads, workdir / "artefacts", args.worker_class)
    rows: list[dict[str, object]] = []
    answered = 0
    try:
        for page in args.pages:  # warm-up: every session's category ordering, caches, code paths
            answered += drive(server, scripts[page], 4, args.warmup)["requests"]
        for concurrency in args.concurrency:
            for page in args.pages:
                load_before = os.getloadavg()[0]
                result = drive(server, scripts[page], concurrency, args.duration)
                answered += result["requests"]
                row = {"backend": backend, "page": page, "concurrency": concurrency, "load": load_before}
                rows.append({**row, **result})
                print_row(rows[-1])
    finally:
        server.stop()
    logged = logged_predictions(url)
    print(f"  {backend}: {logged} predictions logged after shutdown for {answered} answers counted by wrk", flush=True)
    for row in rows:
        row["logged_ok"] = logged >= answered
    return rows


HEADER = (
    f"{'backend':10} {'page':18} {'conc':>4} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
    f"{'max ms':>7} {'errors':>6} {'cpu ms/req':>10} {'load':>5}"
)


def print_row(row: dict[str, object]) -> None:
    print(
        f"{row['backend']:10} {row['page']:18} {row['concurrency']:>4} {row['rps']:>8.0f} "
        f"{row['p50'] / 1000:>7.2f} {row['p95'] / 1000:>7.2f} {row['p99'] / 1000:>7.2f} {row['max'] / 1000:>7.1f} "
        f"{row['errors']:>6} {row['cpu_ms']:>10.2f} {row['load']:>5.1f}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pages", default=",".join(PAGES))
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=None, help="default: the service's (RS_WEB_WORKERS)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (gthread only)")
    parser.add_argument("--worker-class", default=None, help="sync or gthread (default: the service's)")
    parser.add_argument("--port", type=int, default=18086)
    parser.add_argument("--bodies", type=int, default=2000, help="distinct request bodies per page")
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--no-train", dest="train", action="store_false", help="serve without learned models (non-learned cascade only)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args()
    args.pages = [p.strip().upper() for p in args.pages.split(",") if p.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("wrk is not installed (apt-get install -y wrk)")
        return 2
    settings = Settings()
    worker_class = args.worker_class or settings.web_worker_class
    threads = f" threads={args.threads}" if worker_class == "gthread" else ""
    workers = args.workers or settings.web_workers
    print(f"cpus={os.cpu_count()} load={os.getloadavg()} {worker_class} workers={workers}{threads}")
    print(HEADER)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            rows += bench_backend(backend, args, Path(tmp))
    print("\nsummary (target at concurrency 8: >= 800 req/s, p99 <= 20 ms, 0 errors)")
    print(HEADER)
    for row in rows:
        print_row(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
