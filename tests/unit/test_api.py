import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipeline.hulk import COLD_START
from serving.api import create_app
from serving.codec import encode_recs
from serving.sqlite_store import SQLiteStore


@pytest.fixture
def client(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    yield TestClient(create_app(store)), store
    store.close()


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
