"""The ecoseller dashboard routes (exact JSON structure of notes 1.7, metric values on a hand-built scenario, date
parsing) and the JSON routes and browser login of the built-in dashboard page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from recommender_system.storage.prediction_log import PredictionLogStore, PredictionRecord
from recommender_system.storage.tables import utcnow

ALL_MODELS = ["dummy", "selection", "popularity", "latest", "cooccurrence", "similarity", "gru4rec", "als", "ease"]

# --- what the ecoseller dashboard reads (notes 1.7); any missing or renamed key fails these tests ---
MODEL_INFO_KEYS = {"name", "title", "description", "disabled", "canBeTrained", "isReadyForTraining", "isTrained"}
CASCADE_KEYS = {
    "homepageRetrievalCascade",
    "homepageScoringCascade",
    "categoryListRetrievalCascade",
    "categoryListScoringCascade",
    "productDetailRetrievalCascade",
    "productDetailScoringCascade",
    "cartRetrievalCascade",
    "cartScoringCascade",
}
CONFIG_KEYS = {
    "retrievalSize",
    "orderingSize",
    "models_disabled",
    "easeConfig",
    "gru4recConfig",
    "deleted",
} | CASCADE_KEYS
EASE_KEYS = {"l2Options", "reviewsMultiplier"}
GRU4REC_KEYS = {
    "numEpochsOptions",
    "batchSizeOptions",
    "embeddingSizeOptions",
    "hiddenSizeOptions",
    "learningRateOptions",
    "incrementalTrainings",
    "eventsMultiplier",
}
INFO_TITLES = {
    "retrievalSize": "Retrieval size",
    "orderingSize": "Ordering size",
    "homepageRetrievalCascade": "Homepage retrieval",
    "homepageScoringCascade": "Homepage scoring",
    "categoryListRetrievalCascade": "Category list retrieval",
    "categoryListScoringCascade": "Category list scoring",
    "productDetailRetrievalCascade": "Product detail retrieval",
    "productDetailScoringCascade": "Product detail scoring",
    "cartRetrievalCascade": "Cart retrieval",
    "cartScoringCascade": "Cart scoring",
}
PERF_DATA_KEYS = {
    "hitRate",
    "futureHitRate",
    "coverage",
    "predictions",
    "retrievalDuration",
    "scoringDuration",
    "orderingDuration",  # ours, besides ecoseller's
}
TRAIN_DATA_KEYS = {"trainings", "peakMemory", "peakMemoryPercentage", "duration"}
TRAININGS_KEYS = {"started", "completed", "failed", "running"}  # running: ours


def iso(moment: datetime) -> str:
    """What axios sends: ``toISOString()``, milliseconds and a Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def window_args(date_from: datetime, date_to: datetime) -> str:
    return f"date_from={iso(date_from)}&date_to={iso(date_to)}"


def assert_number_or_null(value: Any, where: str) -> None:
    assert value is None or (isinstance(value, int | float) and not isinstance(value, bool)), where


def assert_model_infos(models: list[dict[str, Any]]) -> None:
    for model in models:
        assert set(model) == MODEL_INFO_KEYS
        assert isinstance(model["title"], str) and model["title"]
        assert isinstance(model["description"], str) and model["description"]
        for key in ("disabled", "canBeTrained", "isReadyForTraining", "isTrained"):
            assert isinstance(model[key], bool)


def assert_avg_max(value: dict[str, Any], where: str) -> None:
    assert set(value) == {"avg", "max"}, where
    assert_number_or_null(value["avg"], where)
    assert_number_or_null(value["max"], where)


# ------------------------------------------------------------------------------------------------ scenario
def store(client, items: list[dict[str, Any]]) -> None:
    response = client.post("/store_objects", json=items)
    assert response.status_code == 200, response.get_json()


def catalogue(skus: list[str]) -> list[dict[str, Any]]:
    stamp = "2026-01-01T00:00:00Z"
    items: list[dict[str, Any]] = []
    for index, sku in enumerate(skus, start=1):
        items.append(
            {
                "_model_class": "ProductVariant",
                "sku": sku,
                "ean": "",
                "stock_quantity": 5,
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
    return items


def enter(session_id: str, sku: str, at: datetime, **attribution: Any) -> dict[str, Any]:
    return {
        "_model_class": "ProductDetailEnter",
        "session_id": session_id,
        "product_id": 1,
        "product_variant_sku": sku,
        "create_at": iso(at),
        **attribution,
    }


def log_predictions(database, rows: list[tuple[datetime, str, str, list[str], str]]) -> None:
    records = [
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
            retrieval_duration=0.01,
            scoring_duration=0.02,
            ordering_duration=0.001,
            skus=tuple(skus),
        )
        for at, page, model, skus, session_id in rows
    ]
    with database.write_session() as session:
        PredictionLogStore().insert_many(session, records)


@pytest.fixture
def scenario(client, database) -> datetime:
    """Notes section 7 replayed: 4 variants and 3 views through /store_objects, 4 logged predictions."""
    start = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    store(client, catalogue(["1", "2", "3", "4"]))
    log_predictions(
        database,
        [
            (start, "CART", "similarity", ["1", "2"], "s1"),
            (start, "CART", "similarity", ["2", "3"], "s1"),
            (start, "PRODUCT_DETAIL", "selection", ["1", "2"], "s1"),
            (start, "PRODUCT_DETAIL", "similarity", ["3"], "s2"),
        ],
    )
    store(
        client,
        [
            enter(
                "s1",
                "1",
                start + timedelta(seconds=60),
                recommendation_type="CART",
                model_name="similarity",
                model_identifier="similarity",
                position=0,
            ),
            enter("s2", "2", start + timedelta(seconds=60)),
            enter(
                "s2",
                "1",
                start + timedelta(seconds=61),
                recommendation_type="PRODUCT_DETAIL",
                model_name="similarity",
                model_identifier="similarity",
                position=0,
            ),
        ],
    )
    return start


# ------------------------------------------------------------------------------------------------ structure
def test_configuration_has_every_key_the_dashboard_reads(client) -> None:
    response = client.get("/dashboard/configuration?date_from=not-even-a-date")  # dates are ignored here
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"models", "config", "info"}
    assert [m["name"] for m in body["models"]] == ALL_MODELS
    assert_model_infos(body["models"])
    config = body["config"]
    assert CONFIG_KEYS <= set(config)
    assert {"id", "create_at"}.isdisjoint(config)
    assert EASE_KEYS <= set(config["easeConfig"]) and GRU4REC_KEYS <= set(config["gru4recConfig"])
    assert config["categoryListRetrievalCascade"] is None
    for key in CASCADE_KEYS - {"categoryListRetrievalCascade"}:
        assert isinstance(config[key], list) and config[key], key
    assert isinstance(config["retrievalSize"], int) and isinstance(config["orderingSize"], int)
    info = body["info"]
    for key, title in INFO_TITLES.items():
        assert info[key]["title"] == title
        assert isinstance(info[key]["description"], str) and info[key]["description"]
    for key in EASE_KEYS:
        assert isinstance(info["easeConfig"][key]["title"], str) and isinstance(
            info["easeConfig"][key]["description"], str
        )
    for key in GRU4REC_KEYS:
        entry = info["gru4recConfig"][key]
        assert isinstance(entry["title"], str) and entry["title"] and isinstance(entry["description"], str)


def test_performance_has_every_key_the_dashboard_reads(client) -> None:
    now = utcnow()
    response = client.get(f"/dashboard/performance?{window_args(now - timedelta(days=7), now)}")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"models", "performance", "info"}
    names = [m["name"] for m in body["models"]]
    assert names == ALL_MODELS[1:]  # the performance page lists no dummy
    assert_model_infos(body["models"])
    assert set(body["performance"]) == {"general", "modelSpecific"}
    assert set(body["performance"]["modelSpecific"]) == set(names)
    for where, perf in [("general", body["performance"]["general"]), *body["performance"]["modelSpecific"].items()]:
        assert set(perf) == {"k", "data"}, where
        assert perf["k"] == 10
        data = perf["data"]
        assert set(data) == PERF_DATA_KEYS, where
        for key in ("hitRate", "futureHitRate", "coverage"):
            assert_number_or_null(data[key], f"{where}.{key}")
        assert isinstance(data["predictions"], int)
        for key in ("retrievalDuration", "scoringDuration", "orderingDuration"):
            assert_avg_max(data[key], f"{where}.{key}")
    info = body["info"]
    assert set(info) == {"hitRate", "futureHitRate", "coverage"}
    assert "%k%" in info["hitRate"]["title"] and "%k%" in info["futureHitRate"]["title"]
    for entry in info.values():
        assert set(entry) == {"title", "description"}
        assert isinstance(entry["title"], str) and isinstance(entry["description"], str)


def test_training_has_every_key_the_dashboard_reads(client) -> None:
    now = utcnow()
    response = client.get(f"/dashboard/training?{window_args(now - timedelta(days=7), now)}")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"models", "training"}  # no info on this page
    names = [m["name"] for m in body["models"]]
    assert names == ALL_MODELS[1:]
    assert_model_infos(body["models"])
    assert {m["name"] for m in body["models"] if m["canBeTrained"]} == {
        "cooccurrence",
        "similarity",
        "gru4rec",
        "als",
        "ease",
    }
    assert set(body["training"]) == {"general", "modelSpecific"}
    assert set(body["training"]["modelSpecific"]) == set(names)
    for where, train in [("general", body["training"]["general"]), *body["training"]["modelSpecific"].items()]:
        assert set(train) == {"data"}, where
        assert set(train["data"]) == TRAIN_DATA_KEYS, where
        assert set(train["data"]["trainings"]) == TRAININGS_KEYS
        assert all(isinstance(v, int) for v in train["data"]["trainings"].values())
        for key in ("peakMemory", "peakMemoryPercentage", "duration"):
            assert_avg_max(train["data"][key], f"{where}.{key}")


# ------------------------------------------------------------------------------------------------ figures
def test_performance_figures_of_the_notes_scenario(client, scenario) -> None:
    response = client.get(
        f"/dashboard/performance?{window_args(scenario - timedelta(hours=1), utcnow() + timedelta(minutes=1))}"
    )
    assert response.status_code == 200
    performance = response.get_json()["performance"]
    general = performance["general"]["data"]
    assert general["predictions"] == 4
    assert general["coverage"] == pytest.approx(0.75)
    assert general["hitRate"] == pytest.approx(0.25)
    assert general["futureHitRate"] == pytest.approx(0.5)
    similarity = performance["modelSpecific"]["similarity"]["data"]
    assert similarity["predictions"] == 3
    assert similarity["coverage"] == pytest.approx(0.75)
    assert similarity["hitRate"] == pytest.approx(1 / 3)
    assert similarity["futureHitRate"] == pytest.approx(1 / 3)
    selection = performance["modelSpecific"]["selection"]["data"]
    assert (selection["predictions"], selection["hitRate"], selection["futureHitRate"]) == (1, 0.0, 1.0)
    assert selection["coverage"] == pytest.approx(0.5)
    assert selection["retrievalDuration"]["max"] == pytest.approx(0.01)  # selection retrieved all four
    assert general["scoringDuration"] == {"avg": pytest.approx(0.02), "max": pytest.approx(0.02)}
    ease = performance["modelSpecific"]["ease"]["data"]
    assert (ease["predictions"], ease["hitRate"], ease["coverage"]) == (0, None, 0.0)


def test_dates_with_or_without_fractions_and_with_offsets_are_compared_in_utc(client, database) -> None:
    at = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    log_predictions(database, [(at, "HOMEPAGE", "popularity", ["a"], "s")])
    end = iso(utcnow() + timedelta(minutes=1))

    def predictions(date_from: str) -> int:
        response = client.get(f"/dashboard/performance?date_from={quote(date_from)}&date_to={quote(end)}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()["performance"]["general"]["data"]["predictions"]

    before, after = at - timedelta(minutes=1), at + timedelta(minutes=1)
    assert predictions(iso(before)) == 1
    assert predictions(before.strftime("%Y-%m-%dT%H:%M:%SZ")) == 1
    assert predictions(after.strftime("%Y-%m-%dT%H:%M:%SZ")) == 0
    plus_two = (before.replace(tzinfo=UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+02:00"
    assert predictions(plus_two) == 1  # 2 h ahead on the wall clock, 1 min before in UTC
    later = (after.replace(tzinfo=UTC) - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S-05:00")
    assert predictions(later) == 0
    # an unencoded "+" arrives as a space; still read as an offset
    unencoded = client.get(
        f"/dashboard/performance?date_from={plus_two.replace('+', '%20')}&date_to={quote(end)}"
    ).get_json()
    assert unencoded["performance"]["general"]["data"]["predictions"] == 1


BAD_QUERIES = [
    ("/dashboard/performance", "", "date_from"),
    ("/dashboard/performance", "date_from=2023-08-28T09:30:01.947Z", "date_to"),
    ("/dashboard/training", "date_from=yesterday&date_to=2023-08-28T09:30:01Z", "date_from"),
    ("/dashboard/training", "date_from=2023-08-28T09:30:01Z&date_to=2023-13-28T09:30:01Z", "date_to"),
    ("/dashboard/performance", "date_from=2023-08-29T00:00:00Z&date_to=2023-08-28T00:00:00Z", ""),
    ("/ui/api/timeseries", "date_from=2023-08-28T00:00:00Z&date_to=2023-08-29T00:00:00Z&bucket=week", "bucket"),
    ("/ui/api/timeseries", "date_from=2003-08-28T00:00:00Z&date_to=2023-08-29T00:00:00Z", ""),  # too many hours
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database plays no part
def test_missing_or_bad_dates_are_a_json_400(client) -> None:
    for route, query, field in BAD_QUERIES:
        response = client.get(f"{route}?{query}")
        assert response.status_code == 400, (route, query)
        body = response.get_json()
        assert isinstance(body["error"], str) and body["error"]
        if field:
            assert field in {detail["field"] for detail in body["details"]}, (route, query)


def test_model_states_follow_the_data(client, container) -> None:
    models = client.get("/dashboard/configuration").get_json()["models"]
    # the dashboard's own save: modelsDisabled keyed by index into models (2 = popularity)
    config = client.get("/dashboard/configuration").get_json()["config"]
    config.pop("models_disabled")  # the body of notes 1.8 carries modelsDisabled only
    response = client.post(
        "/store_object", json={**config, "_model_class": "Config", "models": models, "modelsDisabled": {"2": True}}
    )
    assert response.status_code == 200, response.get_json()
    with container.database().write_session() as session:
        training = container.training_store()
        training.record_version(session, "ease", "v1", "/nowhere")
        training.set_current(session, "ease", "v1")
    states = {m["name"]: m for m in client.get("/dashboard/configuration").get_json()["models"]}
    assert states["popularity"]["disabled"] is True
    assert states["selection"]["disabled"] is False
    assert states["ease"]["isTrained"] is True and states["gru4rec"]["isTrained"] is False
    assert states["dummy"]["isTrained"] is True and states["dummy"]["canBeTrained"] is False


def test_training_route_counts(client, container) -> None:
    with container.database().write_session() as session:
        training = container.training_store()
        done = training.start_run(session, "ease")
        training.finish_run(
            session, done, version="v1", duration=12.5, peak_memory_mb=256.0, peak_memory_percentage=2.0
        )
        training.start_run(session, "ease")
    now = utcnow()
    body = client.get(f"/dashboard/training?{window_args(now - timedelta(hours=1), now + timedelta(hours=1))}")
    ease = body.get_json()["training"]["modelSpecific"]["ease"]["data"]
    assert ease["trainings"] == {"started": 2, "completed": 1, "failed": 0, "running": 1}
    assert ease["duration"] == {"avg": 12.5, "max": 12.5}
    assert ease["peakMemory"] == {"avg": 256.0, "max": 256.0}


# ------------------------------------------------------------------------------------------------ built-in page
def test_timeseries_per_model_and_per_page(client, scenario) -> None:
    date_from, date_to = scenario - timedelta(hours=2), utcnow() + timedelta(minutes=1)
    body = client.get(f"/ui/api/timeseries?{window_args(date_from, date_to)}&bucket=hour").get_json()
    assert body["bucket"] == "hour" and body["k"] == 10 and body["liveVariants"] == 4
    buckets = [datetime.fromisoformat(b.replace("Z", "+00:00")).replace(tzinfo=None) for b in body["buckets"]]
    assert buckets[0] == date_from.replace(minute=0, second=0, microsecond=0)
    assert all(b - a == timedelta(hours=1) for a, b in zip(buckets, buckets[1:], strict=False))
    index = buckets.index(scenario.replace(minute=0, second=0, microsecond=0))
    assert list(body["series"]) == ["all", "selection", "similarity"]
    assert body["series"]["all"]["predictions"][index] == 4
    assert sum(body["series"]["all"]["predictions"]) == 4
    assert body["series"]["similarity"]["coverage"][index] == pytest.approx(0.75)
    assert body["series"]["selection"]["futureHitRate"][index] == 1.0
    assert body["series"]["all"]["latency"][index] == pytest.approx(0.031)
    others = [i for i in range(len(buckets)) if i != index]
    assert all(body["series"]["all"]["hitRate"][i] is None for i in others)

    pages = client.get(f"/ui/api/timeseries?{window_args(date_from, date_to)}&bucket=day&group_by=page").get_json()
    assert set(pages["series"]) == {"all", "CART", "PRODUCT_DETAIL"}
    assert sum(pages["series"]["CART"]["predictions"]) == 2
    cart = client.get(f"/ui/api/timeseries?{window_args(date_from, date_to)}&page=CART").get_json()
    assert sum(cart["series"]["all"]["predictions"]) == 2 and list(cart["series"]) == ["all", "similarity"]


def test_runs_versions_and_rollback(client, container) -> None:
    artefacts, versions = container.artefact_store(), container.version_manager()
    with container.database().write_session() as session:
        run_id = container.training_store().start_run(session, "similarity")
        container.training_store().finish_run(
            session,
            run_id,
            version="v2",
            duration=3.0,
            peak_memory_mb=50.0,
            peak_memory_percentage=0.5,
            metrics={"ndcg@20": 0.125},
        )
    for version in ("v1", "v2"):
        artefacts.write("similarity", version, lambda directory: (directory / "weights.bin").write_bytes(b"x"))
        versions.publish("similarity", version, {}, run_id=run_id if version == "v2" else None)

    runs = client.get("/ui/api/runs?limit=5").get_json()["runs"]
    assert runs[0]["modelName"] == "similarity" and runs[0]["metrics"] == {"ndcg@20": 0.125}
    assert runs[0]["duration"] == 3.0 and runs[0]["startedAt"].endswith("Z")
    listed = client.get("/ui/api/versions").get_json()["versions"]
    assert [(v["version"], v["current"]) for v in listed] == [("v2", True), ("v1", False)]
    assert listed[0]["metrics"] == {"ndcg@20": 0.125}

    response = client.post("/ui/api/rollback", json={"model_name": "similarity", "version": "v1"})
    assert response.status_code == 200 and response.get_json() == {"modelName": "similarity", "version": "v1"}
    listed = client.get("/ui/api/versions").get_json()["versions"]
    assert [(v["version"], v["current"]) for v in listed] == [("v2", False), ("v1", True)]
    assert client.post("/ui/api/rollback", json={"model_name": "similarity", "version": "nope"}).status_code == 404
    assert client.post("/ui/api/rollback", json={"version": "v1"}).status_code == 400


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database plays no part
def test_the_page_renders_its_forms(client) -> None:
    response = client.get("/ui/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for fragment in (
        'id="chart-hitRate"',
        'id="config-form"',
        'id="schedule-form"',
        'id="versions-table"',
        "vendor/chartjs/chart.umd.min.js",
    ):
        assert fragment in html
    assert client.get("/static/vendor/chartjs/chart.umd.min.js").status_code == 200
    assert client.get("/ui").status_code == 308


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database plays no part
def test_browser_login_with_a_token(database_url, settings_env, monkeypatch) -> None:
    from recommender_system.app import create_app
    from recommender_system.container import Container

    monkeypatch.setenv("RS_API_TOKEN", "s3cret-token")
    container = Container()
    app = create_app(container)
    app.config["TESTING"] = True
    try:
        client = app.test_client()
        assert client.get("/ui/").status_code == 401
        assert client.get("/ui/?token=wrong").status_code == 401
        response = client.get("/ui/?token=s3cret-token&tab=training")
        assert response.status_code == 303 and response.headers["Location"] == "/ui/?tab=training"
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "s3cret-token" not in cookie
        assert client.get("/ui/").status_code == 200
        assert client.get("/dashboard/configuration").status_code == 200
        save = {"_model_class": "TrainerQueueItem", "model_name": "ease"}
        assert client.post("/store_object", json=save).status_code == 401  # a cross-site form could do this
        assert client.post("/store_object", json=save, headers={"X-RS-UI": "1"}).status_code == 200
        client.delete_cookie("rs_ui")
        assert client.get("/dashboard/configuration").status_code == 401
        client.set_cookie("rs_ui", "forged")
        assert client.get("/dashboard/configuration").status_code == 401
        bearer = app.test_client().get("/dashboard/configuration", headers={"Authorization": "Bearer s3cret-token"})
        assert bearer.status_code == 200
    finally:
        for hook in app.shutdown_hooks:
            hook()
        container.database().dispose()
