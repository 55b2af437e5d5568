"""``GET /metrics``: valid Prometheus text whose counters move with the requests, database gauges, and the
multi-process mode under gunicorn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from recommender_system.storage import migrate

REPO = Path(__file__).resolve().parents[2]


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain") and "version=0.0.4" in response.content_type
    return parse(response.get_data(as_text=True))


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database plays no part
def test_request_counters_latency_and_errors_move(client) -> None:
    before = scrape(client)
    for _ in range(3):
        assert client.get("/dashboard/configuration").status_code == 200
    assert client.get("/dashboard/performance").status_code == 400
    assert client.get("/no/such/route").status_code == 404
    after = scrape(client)

    ok = {"method": "GET", "route": "/dashboard/configuration", "page": "", "status": "200"}
    assert value(after, "rs_http_requests_total", **ok) - value(before, "rs_http_requests_total", **ok) == 3
    bad = {"method": "GET", "route": "/dashboard/performance", "page": "", "status": "400"}
    assert value(after, "rs_http_requests_total", **bad) - value(before, "rs_http_requests_total", **bad) == 1
    errors = {"route": "/dashboard/performance", "status": "400"}
    assert value(after, "rs_http_errors_total", **errors) - value(before, "rs_http_errors_total", **errors) == 1
    unmatched = {"route": "<unmatched>", "status": "404"}
    assert value(after, "rs_http_errors_total", **unmatched) - value(before, "rs_http_errors_total", **unmatched) == 1
    timed = {"method": "GET", "route": "/dashboard/configuration", "page": ""}
    count = "rs_http_request_duration_seconds_count"
    assert value(after, count, **timed) - value(before, count, **timed) == 3
    infinite = {**timed, "le": "+Inf"}
    assert value(after, "rs_http_request_duration_seconds_bucket", **infinite) == value(after, count, **timed)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database plays no part
def test_predictions_are_counted_per_page_and_model(client) -> None:
    variants = [
        {
            "_model_class": "ProductVariant",
            "sku": sku,
            "ean": "",
            "stock_quantity": 3,
            "recommendation_weight": 1.0,
            "attributes": [],
            "create_at": "2026-01-01T00:00:00Z",
            "update_at": "2026-01-01T00:00:00Z",
        }
        for sku in ("m1", "m2", "m3")
    ]
    before = scrape(client)
    assert client.post("/store_objects", json=variants).status_code == 200
    response = client.post("/predict", json={"recommendation_type": "HOMEPAGE", "session_id": "x", "limit": 2})
    assert response.status_code == 200
    assert client.post("/predict", json={"recommendation_type": "NOPE"}).status_code == 400
    after = scrape(client)

    ingested = {"model_class": "ProductVariant"}
    assert (
        value(after, "rs_ingested_objects_total", **ingested) - value(before, "rs_ingested_objects_total", **ingested)
        == 3
    )

    def per_model(samples, name: str) -> dict[str, float]:
        return {
            dict(labels)["model"]: v
            for (sample, labels), v in samples.items()
            if sample == name and dict(labels).get("page") == "HOMEPAGE"
        }

    for name in ("rs_predictions_total", "rs_prediction_duration_seconds_count"):
        grown = {m: v - per_model(before, name).get(m, 0.0) for m, v in per_model(after, name).items()}
        assert sorted(grown.values())[-1:] == [1.0] and sum(grown.values()) == 1.0, name
        assert set(grown) <= {"dummy", "selection", "popularity", "latest"}
    request = {"method": "POST", "route": "/predict", "page": "HOMEPAGE", "status": "200"}
    assert value(after, "rs_http_requests_total", **request) - value(before, "rs_http_requests_total", **request) == 1
    unknown = {"method": "POST", "route": "/predict", "page": "other", "status": "400"}
    assert value(after, "rs_http_requests_total", **unknown) - value(before, "rs_http_requests_total", **unknown) == 1


def test_database_gauges(client, container) -> None:
    with container.database().write_session() as session:
        training = container.training_store()
        training.record_version(session, "ease", "v7", "/nowhere")
        training.set_current(session, "ease", "v7")
        run = training.start_run(session, "ease")
        training.finish_run(session, run, version="v7", duration=4.5, peak_memory_mb=64.0, peak_memory_percentage=1.0)
        failed = training.start_run(session, "gru4rec")
        training.fail_run(session, failed, error="out of memory")
        training.request_job(session, "als")
    samples = scrape(client)
    assert value(samples, "rs_database_up") == 1
    assert value(samples, "rs_model_version_info", model="ease", version="v7") == 1
    assert 0 <= value(samples, "rs_model_version_age_seconds", model="ease") < 600
    assert value(samples, "rs_training_runs", model="ease", status="completed") == 1
    assert value(samples, "rs_training_failures", model="gru4rec") == 1
    assert value(samples, "rs_training_last_duration_seconds", model="ease") == 4.5
    assert value(samples, "rs_training_last_peak_memory_mb", model="ease") == 64.0
    assert value(samples, "rs_training_jobs", status="pending") == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_multiprocess_mode_sums_every_gunicorn_worker(tmp_path) -> None:
    """Two gunicorn workers write their counters to PROMETHEUS_MULTIPROC_DIR; any scrape sums both."""
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    migrate.upgrade(url)
    port = _free_port()
    metrics_dir = tmp_path / "prometheus"
    env = {
        **{k: v for k, v in os.environ.items() if not k.lower().startswith("prometheus_multiproc")},
        "RS_DATABASE_URL": url,
        "RS_ARTEFACT_DIR": str(tmp_path / "artefacts"),
        "RS_SERVER_HOST": "127.0.0.1",
        "RS_SERVER_PORT": str(port),
        "RS_PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "RS_LOG_LEVEL": "WARNING",
    }
    env.pop("RS_API_TOKEN", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "recommender_system", "serve", "--workers", "2", "--threads", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
            time.sleep(0.2)
        sent = 0
        deadline = time.monotonic() + 90
        while len(list(metrics_dir.glob("counter_*.db"))) < 2:  # until both workers have answered requests
            assert time.monotonic() < deadline, "the second gunicorn worker never answered"
            with ThreadPoolExecutor(8) as pool:  # concurrent requests: both single-threaded workers take some
                answers = list(
                    pool.map(lambda _: requests.get(f"{base}/dashboard/configuration", timeout=30), range(16))
                )
            assert [answer.status_code for answer in answers] == [200] * 16
            sent += 16
        ok = {"method": "GET", "route": "/dashboard/configuration", "page": "", "status": "200"}
        for _ in range(4):  # whichever worker answers the scrape, it reports both workers' counts
            samples = parse(requests.get(f"{base}/metrics", timeout=10).text)
            assert value(samples, "rs_http_requests_total", **ok) == sent
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
