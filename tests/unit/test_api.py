import re
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.client import COLD_START, RecsClient
from serving.codec import encode_recs
from serving.redis_store import RedisStore
from serving.sqlite_store import SQLiteStore
from tests.store_support import corrupt_table


@pytest.fixture
def client(store):
    """The API over each store backend."""
    return TestClient(create_app(RecsClient(store))), store


def _publish(store, model="models:/m/1"):
    items = [(COLD_START, encode_recs(np.array([5, 6, 7]), np.array([3, 2, 1]))),
             ("42", encode_recs(np.array([1, 2, 3, 4]), np.array([0.9, 0.8, 0.7, 0.6])))]
    return store.publish("recs", items, meta={"model_uri": model, "as_of": "2026-01-14"})


def test_a_blended_list_names_each_items_pool(client):
    c, store = client
    items = [(COLD_START, encode_recs(np.array([5, 6, 7]), np.array([3, 2, 1]))),
             ("42", encode_recs(np.array([1, 2, 3]), np.array([0.9, 0.8, 0.7]),
                                np.array([1, 0, 1])))]
    store.publish("recs", items, meta={"model_uri": "m", "as_of": "2026-01-14",
                                       "pool_names": ["popular", "co_clicks"]})
    body = c.get("/v1/recommendations/42").json()
    assert [i["pool"] for i in body["items"]] == ["co_clicks", "popular", "co_clicks"]
    cold = c.get("/v1/recommendations/nobody").json()
    assert cold["cold_start"] and all(i["pool"] is None for i in cold["items"])


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
                                  "/v1/recommendations/42%0A",
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


def test_unreachable_store_is_503_without_its_password(reliability):
    dead = RedisStore("redis://rankline:hunter2@127.0.0.1:1/0")  # nothing listens on port 1
    c = TestClient(create_app(RecsClient(dead)))
    r = c.get("/v1/recommendations/42")
    assert r.status_code == 503 and "Redis at redis://***@127.0.0.1:1/0" in r.json()["detail"]
    reliability("store fault", "Redis unreachable (password in URL)", "503, password redacted",
                r.json()["detail"])
    h = c.get("/healthz")  # open to anyone: it must not hand out the password either
    assert h.status_code == 503 and "hunter2" not in h.text and "hunter2" not in r.text


class StalledStore(SQLiteStore):
    """A store whose reads hang until released, like a Redis stopped with SIGSTOP (the real one
    is in tests/integration/test_store_faults.py)."""

    def __init__(self, path):
        super().__init__(path)
        self.release = threading.Event()

    def get_many(self, namespace, keys):
        self.release.wait(30)
        return super().get_many(namespace, keys)

    def health(self, namespace):
        self.release.wait(30)
        return super().health(namespace)


def test_a_stalled_store_is_503_after_the_timeout_and_blocks_nothing_else(tmp_path):
    store = StalledStore(tmp_path / "s.db")
    _publish(store)
    c = TestClient(create_app(RecsClient(store), timeout_s=0.3))
    try:
        t0 = time.monotonic()
        r = c.get("/healthz")
        assert r.status_code == 503 and time.monotonic() - t0 < 0.3 + 3
        assert r.json()["detail"] == ("the serving store did not answer within 0.3 s "
                                      "(RANKLINE_STORE_TIMEOUT_S)")
        assert c.get("/v1/recommendations/42").status_code == 503
        assert c.get("/openapi.json").status_code == 200
    finally:
        store.release.set()
    assert c.get("/v1/recommendations/42").status_code == 200


def _published_file(tmp_path, versions=1):
    """A SQLite store file with ``versions`` of 400 users published, closed."""
    path = tmp_path / "serving.db"
    writer = SQLiteStore(path)
    for v in range(versions):
        lists = [(COLD_START, encode_recs(np.array([5, 6, 7]), np.array([3, 2, 1])))]
        lists += [(str(u), encode_recs(np.arange(50) + u + v, np.linspace(1, 0, 50)))
                  for u in range(400)]
        writer.publish("recs", lists, meta={"model_uri": f"models:/m/{v + 1}", "as_of": "2026-01-14"})
    writer.close()
    return path


@pytest.mark.parametrize("first", ["/healthz", "/v1/recommendations/42"])
def test_a_corrupt_sqlite_store_is_503_never_500(tmp_path, first, reliability):
    path = _published_file(tmp_path)
    corrupt_table(path, "rl_data_recs_1")
    c = TestClient(create_app(RecsClient.connect(f"sqlite://{path}")), raise_server_exceptions=False)
    for url in (first, "/v1/recommendations/7", "/healthz"):
        r = c.get(url)
        assert r.status_code == 503, (url, r.text)
        detail = r.json()["detail"]
        assert "is corrupt (database disk image is malformed)" in detail, detail
        assert "`rankline store rollback`" in detail and "`rankline run-dag hulk_refresh`" in detail
    reliability("store fault", f"corrupt SQLite file ({first} first)", "503 on reads and /healthz",
                detail)


def test_a_damaged_list_is_503_never_500(tmp_path, reliability):
    store = SQLiteStore(tmp_path / "s.db")
    store.publish("recs", [(COLD_START, b"\x07garbage"), ("42", b"")])
    c = TestClient(create_app(RecsClient(store)), raise_server_exceptions=False)
    for user in ("42", "new_user"):
        r = c.get(f"/v1/recommendations/{user}")
        assert r.status_code == 503 and "damaged list" in r.json()["detail"], r.text
    reliability("store fault", "undecodable stored list", "503", r.json()["detail"])


def test_a_missing_sqlite_store_is_reported_and_never_created(tmp_path, reliability):
    path = tmp_path / "typo.db"
    c = TestClient(create_app(RecsClient.connect(f"sqlite://{path}")))
    for url in ("/healthz", "/v1/recommendations/42"):
        r = c.get(url)
        assert r.status_code == 503 and r.json()["detail"].startswith(f"no serving store at {path}")
        assert "RANKLINE_STORE_PATH" in r.json()["detail"]
    assert not path.exists()
    reliability("store fault", "RANKLINE_STORE_PATH typo (missing file)",
                "503 on reads and /healthz; no file created", r.json()["detail"])


def test_the_app_from_settings_does_not_create_the_store(settings):
    from pipeline.serve import app_from_settings

    settings_path = settings.serving_store_path
    c = TestClient(app_from_settings())
    r = c.get("/healthz")
    assert r.status_code == 503 and "no serving store at" in r.json()["detail"]
    assert not settings_path.exists()
    _publish(SQLiteStore(settings_path))  # the publisher creates it; the running API serves it
    assert c.get("/healthz").json()["status"] == "ok"
    assert c.get("/v1/recommendations/42").json()["store_version"] == 1


def test_client_reads_many_users_from_one_version(store, reliability):
    _publish(store)
    recs = RecsClient(store)
    got = recs.get_many(["42", "new_user"], k=2)
    assert got["42"].item_ids == [1, 2] and not got["42"].cold_start
    assert got["new_user"].item_ids == [5, 6] and got["new_user"].cold_start
    assert got["42"].store_version == got["new_user"].store_version == 1
    assert recs.get("42", k=10).scores == pytest.approx([0.9, 0.8, 0.7, 0.6])
    for bad in (dict(user_ids=["a b"]), dict(user_ids=[COLD_START]), dict(user_ids=["1"], k=0),
                dict(user_ids=["42\n"]), dict(user_ids=["\n42"]), dict(user_ids=[42])):
        with pytest.raises(ValueError) as err:
            recs.get_many(**bad)
        reliability("bad params", f"reader client get_many({bad})", "ValueError", str(err.value))


def test_client_connects_by_url(tmp_path):
    _publish(SQLiteStore(tmp_path / "s.db"))
    with RecsClient.connect(f"sqlite:///{tmp_path / 's.db'}") as recs:
        assert recs.get("42").item_ids == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="unsupported") as err:
        RecsClient.connect("mysql://app:hunter2@db/x")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("api_key", ["", "s3cret"])
def test_docs_work_offline_from_packaged_assets(tmp_path, api_key):
    # the stock /docs loads Swagger UI from cdn.jsdelivr.net: blank on a machine without internet
    c = TestClient(create_app(RecsClient(SQLiteStore(tmp_path / "s.db")), api_key=api_key))
    r = c.get("/docs")  # open without a key, like /openapi.json: the page is how one tries the key
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text, r.text  # no outside host at all
    assert '"validatorUrl": null' in r.text  # no badge image from validator.swagger.io
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
    assert len(assets) >= 3, assets  # Swagger UI's JS and CSS, and the favicon
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), url
        got = c.get(url)
        assert got.status_code == 200 and got.content, url
    assert any(u.endswith(".js") for u in assets) and any(u.endswith(".css") for u in assets)
    assert c.get("/redoc").status_code == 404  # ReDoc fetches its logo from a CDN: switched off
    spec = c.get("/openapi.json")
    assert spec.status_code == 200 and "/v1/recommendations/{user_id}" in spec.json()["paths"]
