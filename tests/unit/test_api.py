import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.client import COLD_START, RecsClient
from serving.codec import encode_recs
from serving.redis_store import RedisStore


@pytest.fixture
def client(store):
    """The API over each store backend."""
    return TestClient(create_app(RecsClient(store))), store


def _publish(store, model="models:/m/1"):
    items = [(COLD_START, encode_recs(np.array([5, 6, 7]), np.array([3, 2, 1]))),
             ("42", encode_recs(np.array([1, 2, 3, 4]), np.array([0.9, 0.8, 0.7, 0.6])))]
    return store.publish("recs", items, meta={"model_uri": model, "as_of": "2026-01-14"})


def test_known_user_gets_its_list_with_versions(client):
    c, store = client
    _publish(store)
    r = c.get("/v1/recommendations/42", params={"k": 2})
    assert r.status_code == 200
    body = r.json()
    assert [i["item_id"] for i in body["items"]] == [1, 2]
    assert body["cold_start"] is False and body["store_version"] == 1
    assert body["model"] == "models:/m/1"


def test_unknown_user_gets_cold_start(client):
    c, store = client
    _publish(store)
    body = c.get("/v1/recommendations/someone_new").json()
    assert body["cold_start"] is True and [i["item_id"] for i in body["items"]] == [5, 6, 7]


@pytest.mark.parametrize("path", ["/v1/recommendations/42?k=0", "/v1/recommendations/42?k=100000",
                                  "/v1/recommendations/bad%20id", "/v1/recommendations/42?k=x",
                                  f"/v1/recommendations/{COLD_START}"])
def test_invalid_input_is_a_4xx(client, path):
    c, store = client
    _publish(store)
    r = c.get(path)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_nothing_published_is_404_and_health_says_so(client):
    c, _ = client
    assert c.get("/v1/recommendations/42").status_code == 404
    assert c.get("/healthz").json()["status"] == "empty"


def test_health_names_the_served_version(client):
    c, store = client
    _publish(store)
    _publish(store, "models:/m/2")
    h = c.get("/healthz").json()
    assert h["store_version"] == 2 and h["model"] == "models:/m/2"


def test_api_key_is_required_when_set(store):
    _publish(store)
    c = TestClient(create_app(RecsClient(store), api_key="s3cret"))
    assert c.get("/v1/recommendations/42").status_code == 401
    assert c.get("/v1/recommendations/42", headers={"X-API-Key": "nope"}).status_code == 401
    assert c.get("/v1/recommendations/42", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200  # load balancers need no key
    spec = c.get("/openapi.json").json()
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])


def test_unreachable_store_is_503():
    dead = RedisStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
    c = TestClient(create_app(RecsClient(dead)))
    r = c.get("/v1/recommendations/42")
    assert r.status_code == 503 and "Redis" in r.json()["detail"]
    assert c.get("/healthz").status_code == 503


def test_client_reads_many_users_from_one_version(store):
    _publish(store)
    recs = RecsClient(store)
    got = recs.get_many(["42", "new_user"], k=2)
    assert got["42"].item_ids == [1, 2] and not got["42"].cold_start
    assert got["new_user"].item_ids == [5, 6] and got["new_user"].cold_start
    assert got["42"].store_version == got["new_user"].store_version == 1
    assert recs.get("42", k=10).scores == pytest.approx([0.9, 0.8, 0.7, 0.6])
    for bad in (dict(user_ids=["a b"]), dict(user_ids=[COLD_START]), dict(user_ids=["1"], k=0)):
        with pytest.raises(ValueError):
            recs.get_many(**bad)


def test_client_connects_by_url(tmp_path):
    from serving.sqlite_store import SQLiteStore

    _publish(SQLiteStore(tmp_path / "s.db"))
    with RecsClient.connect(f"sqlite:///{tmp_path / 's.db'}") as recs:
        assert recs.get("42").item_ids == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="unsupported"):
        RecsClient.connect("mysql://x")
