"""The built-in dashboard page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The real app is served by werkzeug in a thread against a seeded SQLite database. The page must load without
script errors, draw its charts from the logged predictions, list runs and versions, and a model switched off there
must stop being used by ``/predict``. A screenshot is kept in ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from recommender_system.storage import migrate
from recommender_system.storage.prediction_log import PredictionLogStore, PredictionRecord
from recommender_system.storage.tables import ProductDetailEnter, utcnow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed(container) -> None:  # type: ignore[no-untyped-def]
    """A small shop: 40 variants, one order (popularity is ready), 3 days of logged predictions and views,
    two training runs and a published version."""
    stamp = "2026-01-01T00:00:00Z"
    skus = [f"sku-{i:02d}" for i in range(40)]
    items: list[dict] = []
    for index, sku in enumerate(skus, start=1):
        items.append(
            {
                "_model_class": "ProductVariant",
                "sku": sku,
                "ean": "",
                "stock_quantity": 10,
                "recommendation_weight": 1.0,
                "attributes": [],
                "create_at": stamp,
                "update_at": stamp,
            }
        )
        items.append(
            {
                "_model_class": "Product",
                "id": index,
                "published": True,
                "product_variants": [sku],
                "create_at": stamp,
                "update_at": stamp,
            }
        )
    items.append(
        {
            "_model_class": "Order",
            "token": "5f0c6a4e-3b7d-4a8e-9a55-0c8f1f2d1a11",
            "session_id": "buyer",
            "product_variants": [["sku-03", 2], ["sku-07", 1]],
        }
    )
    container.data_manager().store_objects(items)

    rng = random.Random(3)
    now = utcnow()
    records, views = [], []
    for index in range(400):
        at = now - timedelta(minutes=rng.randrange(5, 3 * 24 * 60))
        session_id = f"shopper-{rng.randrange(60)}"
        shown = rng.sample(skus, 10)
        model, page = rng.choice(
            [("popularity", "HOMEPAGE"), ("selection", "HOMEPAGE"), ("popularity", "PRODUCT_DETAIL"), ("ease", "CART")]
        )
        records.append(
            PredictionRecord(
                created_at=at,
                recommendation_type=page,
                session_id=session_id,
                user_id=None,
                retrieval_model_name="selection",
                retrieval_model_identifier="selection",
                scoring_model_name=model,
                scoring_model_identifier=model,
                ordering_model_name=None,
                retrieval_duration=rng.random() / 100,
                scoring_duration=rng.random() / 50,
                ordering_duration=rng.random() / 500,
                skus=tuple(shown),
            )
        )
        if index % 2 == 0:
            clicked = shown[rng.randrange(10)] if rng.random() < 0.5 else rng.choice(skus)
            views.append(
                ProductDetailEnter(
                    session_id=session_id,
                    product_id=1,
                    product_variant_sku=clicked,
                    created_at=at + timedelta(seconds=rng.randrange(5, 120)),
                )
            )
    database = container.database()
    with database.write_session() as session:
        PredictionLogStore().insert_many(session, records)
        session.add_all(views)
        training = container.training_store()
        run = training.start_run(session, "similarity")
        training.finish_run(
            session,
            run,
            version="v1",
            duration=3.2,
            peak_memory_mb=120.0,
            peak_memory_percentage=1.5,
            metrics={"ndcg@20": 0.08},
        )
        failed = training.start_run(session, "ease")
        training.fail_run(session, failed, error="MemoryError: the item-item matrix did not fit", duration=1.0)
    container.artefact_store().write("similarity", "v1", lambda d: (d / "neighbours.bin").write_bytes(b"\0" * 8))
    with database.write_session() as session:
        training.record_version(
            session, "similarity", "v1", str(container.artefact_store().directory("similarity", "v1"))
        )


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from werkzeug.serving import make_server

    from recommender_system.app import create_app
    from recommender_system.container import Container

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    migrate.upgrade(url)
    monkeypatch.setenv("RS_DATABASE_URL", url)
    monkeypatch.setenv("RS_ARTEFACT_DIR", str(tmp_path / "artefacts"))
    monkeypatch.setenv("RS_REFRESH_SECONDS", "0.2")
    monkeypatch.delenv("RS_API_TOKEN", raising=False)
    container = Container()
    _seed(container)
    app = create_app(container)
    port = _free_port()
    http = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        http.shutdown()
        thread.join(timeout=10)
        for hook in app.shutdown_hooks:
            hook()
        container.database().dispose()


def _homepage_model(base: str) -> str:
    response = requests.post(
        f"{base}/predict",
        json={"recommendation_type": "HOMEPAGE", "session_id": "browser-test", "limit": 5},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    items = response.json()
    assert items, "the seeded shop must get recommendations"
    return str(items[0]["rs_info"]["model_name"])


def test_dashboard_page_in_chromium(server: str) -> None:
    from playwright.sync_api import sync_playwright

    deadline = time.monotonic() + 15
    while _homepage_model(server) != "popularity":  # the serving state picks up the seeded order
        assert time.monotonic() < deadline, "popularity never became the homepage model"
        time.sleep(0.2)

    # the web process's background aggregation evaluates the seeded log's hits
    window = f"date_from={(utcnow() - timedelta(days=7)).isoformat()}Z&date_to={utcnow().isoformat()}Z"
    deadline = time.monotonic() + 30
    while not (
        requests.get(f"{server}/dashboard/performance?{window}", timeout=10).json()["performance"]["general"]["data"][
            "hitRate"
        ]
    ):
        assert time.monotonic() < deadline, "the background aggregation never evaluated the seeded views"
        time.sleep(0.5)

    errors: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(f"{server}/ui/")
            page.wait_for_function("window.rsDashboard && window.rsDashboard.loaded >= 1", timeout=20_000)
            assert errors == []
            assert page.evaluate("window.rsDashboard.errors") == []

            # charts drawn from the log: 400 predictions in the window, hit rates computed
            charts = page.evaluate(
                """() => Object.fromEntries(Object.entries(window.rsDashboard.charts).map(([key, chart]) => [key,
                    chart.data.datasets.map(d => ({label: d.label,
                        total: d.data.reduce((s, v) => s + (v || 0), 0),
                        points: d.data.filter(v => v !== null).length}))]))"""
            )
            assert set(charts) == {"predictions", "hitRate", "futureHitRate", "coverage", "latency"}
            totals = {d["label"]: d["total"] for d in charts["predictions"]}
            assert totals["all"] >= 400  # the seeded ones and the /predict calls above
            assert {"popularity", "selection", "ease"} <= set(totals)
            assert next(d for d in charts["hitRate"] if d["label"] == "all")["total"] > 0
            assert next(d for d in charts["futureHitRate"] if d["label"] == "all")["total"] > 0
            assert next(d for d in charts["latency"] if d["label"] == "all")["points"] > 10
            assert page.locator("#perf-table tbody tr").count() == 9  # all + 8 models
            overall = page.locator("#perf-table tbody tr").first.locator("td").all_inner_texts()
            assert overall[0] == "all" and overall[2] != "0.00 %" and overall[4] == "100.00 %"
            assert "MemoryError" in page.locator("#runs-table").inner_text()
            assert "v1" in page.locator("#versions-table").inner_text()
            assert page.locator(".cascade-box").count() == 7

            # switch popularity off and save through /store_object
            page.locator('#models-table input[data-model="popularity"]').uncheck()
            page.locator("#save-config").click()
            page.wait_for_function(
                "document.getElementById('config-status').textContent.startsWith('Saved')", timeout=10_000
            )
            assert page.locator('#models-table input[data-model="popularity"]').is_checked() is False
            deadline = time.monotonic() + 15
            while (model := _homepage_model(server)) == "popularity":
                assert time.monotonic() < deadline, "/predict still uses the model switched off on the page"
                time.sleep(0.2)
            assert model == "selection"
            configuration = requests.get(f"{server}/dashboard/configuration", timeout=10).json()
            assert configuration["config"]["models_disabled"]["popularity"] is True
            assert {m["name"]: m["disabled"] for m in configuration["models"]}["popularity"] is True

            # schedule a training: a pending job appears (read back through /metrics)
            page.locator("#schedule-model").select_option("ease")
            page.locator("#schedule-form button").click()
            page.wait_for_function(
                "document.getElementById('schedule-status').textContent.includes('ease scheduled')", timeout=10_000
            )
            assert 'rs_training_jobs{status="pending"} 1.0' in requests.get(f"{server}/metrics", timeout=10).text

            # serve the kept similarity version from the versions table
            page.locator('#versions-table button[data-version="v1"]').click()
            page.wait_for_function(
                "document.getElementById('versions-status').textContent.includes('now serves v1')", timeout=10_000
            )
            assert page.locator("#versions-table tr.current").inner_text().startswith("similarity")

            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    assert os.path.getsize(ARTIFACTS / "dashboard.png") > 10_000
