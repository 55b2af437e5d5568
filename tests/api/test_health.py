from __future__ import annotations


def shutdown(app) -> None:
    for hook in app.shutdown_hooks:
        hook()


def test_liveness_answers_200_with_empty_body(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.data == b""


def test_ready_when_migrated(client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json() == {"ready": True, "database": True, "migrated": True}


def test_not_ready_before_migrations(tmp_path, monkeypatch) -> None:
    from recommender_system.app import create_app
    from recommender_system.container import Container

    monkeypatch.setenv("RS_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    app = create_app(Container())
    try:
        response = app.test_client().get("/ready")
    finally:
        shutdown(app)
    assert response.status_code == 503
    assert response.get_json()["migrated"] is False


def test_unknown_route_is_json_404(client) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert "error" in response.get_json()


def test_api_token_protects_every_route_but_liveness(tmp_path, monkeypatch, database_url) -> None:
    from recommender_system.app import create_app
    from recommender_system.container import Container

    monkeypatch.setenv("RS_DATABASE_URL", database_url)
    monkeypatch.setenv("RS_API_TOKEN", "s3cret")
    app = create_app(Container())
    client = app.test_client()
    try:
        assert_token_required(client)
    finally:
        shutdown(app)


def assert_token_required(client) -> None:
    assert client.get("/").status_code == 200
    denied = client.get("/ready")
    assert denied.status_code == 401
    assert "token" in denied.get_json()["error"]
    assert client.get("/ready", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/ready", headers={"Authorization": "Bearer s3cret"}).status_code == 200
