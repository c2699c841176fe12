"""Contract tests of the versioned key-value store: every backend runs the same suite
(the ``store`` and ``store_spec`` fixtures in conftest.py are parametrized over the backends)."""

import threading
import time

import pytest

from serving.store import StoreCorrupt, StoreError, StoreUnavailable, plan_cleanup, redact_url
from tests.store_support import corrupt_table, new_spec, open_spec, purge, require_redis


def _items(tag, n=20):
    return [(f"k{i}", f"{tag}-{i}".encode()) for i in range(n)]


def test_publish_then_read_names_the_version(store):
    info = store.publish("recs", _items("a"), meta={"model_uri": "m1"})
    assert info.version == 1 and info.state == "live" and info.n_keys == 20
    value, got = store.get("recs", "k3")
    assert value == b"a-3" and got.version == 1 and got.meta["model_uri"] == "m1"
    assert store.get("recs", "missing")[0] is None


def test_nothing_published_is_a_clear_error(store):
    assert store.current("recs") is None
    with pytest.raises(StoreError, match="no published version"):
        store.get("recs", "k1")


def test_new_version_switches_and_old_ones_are_kept_then_removed(store):
    for tag in "abcd":
        store.publish("recs", _items(tag), keep=3)
    assert store.get("recs", "k1")[0] == b"d-1"
    states = {v.version: v.state for v in store.versions("recs")}
    assert states == {4: "live", 3: "standby", 2: "standby", 1: "removed"}


def test_get_many_reads_one_version(store):
    store.publish("recs", _items("a"))
    values, info = store.get_many("recs", ["k1", "k2", "nope"])
    assert values == [b"a-1", b"a-2", None] and info.version == 1


def test_rollback_to_previous_and_to_a_given_version(store):
    for tag in "abc":
        store.publish("recs", _items(tag))
    assert store.rollback("recs", why="bad model").version == 2
    assert store.get("recs", "k0")[0] == b"b-0"
    assert store.rollback("recs", to=3).version == 3
    with pytest.raises(StoreError, match="not kept"):
        store.rollback("recs", to=99)


def test_failed_publish_leaves_the_previous_version_served(store):
    store.publish("recs", _items("a"))

    def broken():
        yield from _items("b", 10)
        raise RuntimeError("scoring crashed")

    with pytest.raises(RuntimeError, match="scoring crashed"):
        store.publish("recs", broken())
    value, info = store.get("recs", "k1")
    assert value == b"a-1" and info.version == 1
    # The next publish succeeds and cleans up what the failed one left.
    assert store.publish("recs", _items("c")).version == 3
    assert {v.version: v.state for v in store.versions("recs")}[2] == "failed"


def test_duplicate_keys_fail_verification(store):
    store.publish("recs", _items("a"))
    with pytest.raises(StoreError, match="verification failed"):
        store.publish("recs", [("k1", b"x"), ("k1", b"y")])
    assert store.get("recs", "k1")[0] == b"a-1"


def test_namespaces_are_validated_and_independent(store):
    with pytest.raises(StoreError, match="invalid namespace"):
        store.publish("Robert'); DROP TABLE x;--", [])
    store.publish("recs", _items("a"))
    store.publish("features", [("user:1", b"f")])
    assert store.get("features", "user:1")[0] == b"f"
    assert store.current("recs").version == 1


def test_concurrent_publishers_take_turns(store_spec):
    """Two publishers of one namespace never destroy each other's work in progress."""
    errors = []

    def publish(tag):
        s = open_spec(store_spec, batch_size=50)
        try:
            for _ in range(3):
                s.publish("recs", _items(tag, 500))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=publish, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = open_spec(store_spec)
    states = [v.state for v in s.versions("recs")]
    assert states.count("live") == 1 and "failed" not in states and len(states) == 6
    s.close()


def test_many_processes_open_a_new_sqlite_file_at_once(tmp_path):
    """Opening a brand-new file from several places at once (a publisher and the API starting
    together) must not fail with "database is locked" while it is switched to WAL."""
    from serving.sqlite_store import SQLiteStore

    for attempt in range(20):
        path, errors = tmp_path / f"new{attempt}.db", []
        barrier = threading.Barrier(8)

        def open_it(path=path, barrier=barrier, errors=errors):
            barrier.wait()
            try:
                s = SQLiteStore(path)
                s.current("recs")
                s.close()
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


def test_readers_never_see_a_mix_of_versions(store_spec):
    """A reader thread reads many keys at once while versions are published and rolled back."""
    first = open_spec(store_spec)
    first.publish("recs", _items("v0", 300))
    stop, seen, errors = threading.Event(), set(), []

    def reader():
        s = open_spec(store_spec)
        keys = [f"k{i}" for i in range(0, 300, 7)]
        while not stop.is_set():
            try:
                values, info = s.get_many("recs", keys)
                tags = {v.split(b"-")[0] for v in values}
                assert len(tags) == 1, f"mixed versions {tags}"
                seen.add((info.version, tags.pop()))
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
        s.close()

    def wait_seen(version):  # the reader keeps up with the writer, so every switch is read across
        deadline = time.monotonic() + 30
        while (version not in {v for v, _ in seen.copy()} and not errors
               and time.monotonic() < deadline):
            time.sleep(0.001)

    t = threading.Thread(target=reader)
    t.start()
    wait_seen(1)
    writer = open_spec(store_spec, batch_size=40)
    for i in range(1, 6):
        writer.publish("recs", _items(f"v{i}", 300), keep=2)
        wait_seen(i + 1)
    writer.rollback("recs")
    stop.set()
    t.join()
    assert errors == []
    assert all(tag == f"v{version - 1}".encode() for version, tag in seen)
    assert {v for v, _ in seen} >= set(range(1, 7))  # the reader read every published version
    writer.close()
    first.close()


def test_rollback_is_recorded_with_who_and_why(store):
    for tag in "ab":
        store.publish("recs", _items(tag))
    store.rollback("recs", why="bad model", by="alice")
    last, before = store.events("recs")[:2]
    assert (last["action"], last["from"], last["to"], last["why"]) == ("rollback", 2, 1, "bad model")
    assert last["who"] == "alice" and last["at"] and before["who"]
    assert (before["action"], before["to"]) == ("publish", 2)


def test_a_removed_version_cannot_be_rolled_back_to(store):
    for tag in "abcd":
        store.publish("recs", _items(tag), keep=2)
    with pytest.raises(StoreError, match="not kept"):
        store.rollback("recs", to=1)
    assert store.rollback("recs").version == 3


def test_many_keys_in_one_read(store):
    store.publish("recs", _items("a", 2500))
    keys = [f"k{i}" for i in range(2500)] + ["nope"]
    values, info = store.get_many("recs", keys)
    assert values[:-1] == [f"a-{i}".encode() for i in range(2500)] and values[-1] is None


def test_drop_removes_only_that_namespace(store):
    store.publish("recs", _items("a"))
    store.publish("features", [("user:1", b"f")])
    store.drop("recs")
    assert store.current("recs") is None and store.versions("recs") == []
    assert store.get("features", "user:1")[0] == b"f"
    assert store.publish("recs", _items("b")).version == 1


def test_cleanup_plan_keeps_live_and_newest_standby():
    states = {1: "standby", 2: "standby", 3: "live", 4: "writing", 5: "standby"}
    assert plan_cleanup(states, 3, keep=2) == {4: "failed", 2: "removed", 1: "removed"}
    # after a rollback the live version may be older than kept standby ones
    assert plan_cleanup({1: "live", 2: "standby", 3: "standby"}, 1, keep=3) == {}
    assert plan_cleanup({1: "live", 2: "standby", 3: "standby"}, 1, keep=1) == {3: "removed",
                                                                                  2: "removed"}


@pytest.fixture
def redis_spec(tmp_path):
    require_redis()
    spec = new_spec("redis", tmp_path)
    yield spec
    purge(spec)


def test_redis_publisher_that_lost_its_lock_cannot_switch(redis_spec):
    """If a stalled publisher's lease expired and another publisher took the lock, the stalled
    one must not switch, nor remove the other's work, nor release the other's lock. (Redis
    only: an flock cannot be lost while its holder lives.)"""
    store = open_spec(redis_spec, batch_size=5)
    store.publish("recs", _items("a"))
    lock = store._k("recs", "lock")

    def stolen():
        yield from _items("b", 10)
        store.r.set(lock, "someone-else")  # the lease expired; another publisher holds it now
        yield from [(f"x{i}", b"b") for i in range(10)]

    with pytest.raises(StoreError, match="lock"):
        store.publish("recs", stolen())
    assert store.get("recs", "k1")[0] == b"a-1" and store.current("recs").version == 1
    assert store.r.get(lock) == b"someone-else"
    assert {v.version: v.state for v in store.versions("recs")}[2] == "writing"  # theirs to clean
    store.r.delete(lock)
    assert store.publish("recs", _items("c")).version == 3
    assert {v.version: v.state for v in store.versions("recs")}[2] == "failed"
    store.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://user:pw@h:1/0", "redis://***@h:1/0"),
    ("redis://:pw@h", "redis://***@h"),
    ("rediss://default:pw@cache.example:6380/2", "rediss://***@cache.example:6380/2"),
    ("unix://:pw@/run/redis.sock?db=0", "unix://***@/run/redis.sock?db=0"),
    ("unix:///run/redis.sock?db=0&password=x", "unix:///run/redis.sock?db=0&password=***"),
    ("postgresql://u:p@h/db", "postgresql://***@h/db"),
    ("http://u:p@h/x", "http://***@h/x"),
    ("http://token@h", "http://***@h"),
    ("redis://h:6379/0?password=x&db=1", "redis://h:6379/0?password=***&db=1"),
    ("redis://:p@ss/w#rd@h/0", "redis://***@h/0"),  # unencoded / and # in a password
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("sqlite:///var/serving.db", "sqlite:///var/serving.db"),
])
def test_redact_url_hides_credentials(url, shown):
    assert redact_url(url) == shown


def test_redis_store_never_shows_its_password():
    from serving.redis_store import RedisStore

    store = RedisStore("redis://admin:hunter2@127.0.0.1:1/0", timeout_s=0.5)  # nothing on port 1
    assert "hunter2" not in repr(store) and "admin" not in repr(store)
    for read in (store.ping, lambda: store.get("recs", "k1"), lambda: store.current("recs"),
                 lambda: store.versions("recs"), lambda: store.events("recs"),
                 lambda: store.health("recs"), lambda: store.publish("recs", _items("a"))):
        with pytest.raises(StoreUnavailable, match="not reachable") as err:
            read()
        assert "hunter2" not in str(err.value) and "redis://***@127.0.0.1:1/0" in str(err.value)
    store.close()


def test_redis_calls_give_up_after_the_timeout():
    """A server that accepts connections but never answers (a stalled Redis) is a
    StoreUnavailable after ``timeout_s``, not a hang."""
    import socket
    import time

    from serving.redis_store import RedisStore

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes connections; nobody reads them
        store = RedisStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout_s=0.3)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0.3 s"):
            store.get("recs", "k1")
        assert time.monotonic() - t0 < 0.3 + 3
        store.close()


def test_a_reader_never_creates_the_store_file(tmp_path):
    """A mistyped path is reported, not served as an empty store; once the file is published the
    same reader serves it."""
    from serving.sqlite_store import SQLiteStore

    path = tmp_path / "typo" / "serving.db"
    reader = SQLiteStore(path, create=False)
    for read in (lambda: reader.get("recs", "k1"), lambda: reader.current("recs"),
                 lambda: reader.health("recs")):
        with pytest.raises(StoreUnavailable, match=r"no serving store at .*typo.*RANKLINE_STORE_PATH"):
            read()
    assert not path.exists() and not path.parent.exists()
    path.parent.mkdir()
    path.touch()  # an empty file (what an older reader's typo left behind) is no store either
    with pytest.raises(StoreUnavailable, match="holds no rankline store"):
        reader.current("recs")
    assert path.stat().st_size == 0
    path.unlink()
    writer = SQLiteStore(path)
    writer.publish("recs", _items("a"))
    assert reader.get("recs", "k1")[0] == b"a-1" and reader.health("recs").version == 1
    writer.close()
    reader.close()


def _corrupt_store(tmp_path, versions=1):
    """A SQLite store with ``versions`` published (the live one corrupt afterwards) and its path."""
    from serving.sqlite_store import SQLiteStore

    path = tmp_path / "serving.db"
    writer = SQLiteStore(path)
    for v in range(versions):
        writer.publish("recs", [(f"u{i:03d}", b"%d-" % v + b"x" * 300) for i in range(400)])
    writer.close()
    corrupt_table(path, f"rl_data_recs_{versions}")
    return path


def test_a_corrupt_sqlite_store_is_reported_by_reads_and_health(tmp_path):
    from serving.sqlite_store import SQLiteStore

    path = _corrupt_store(tmp_path)
    reader = SQLiteStore(path, create=False)
    with pytest.raises(StoreCorrupt, match=r"serving\.db is corrupt \(database disk image is malformed"
                                           r"\): .*`rankline store rollback`.*hulk_refresh"):
        reader.get("recs", "u001")
    with pytest.raises(StoreCorrupt, match="corrupt"):
        reader.health("recs")
    # a fresh reader finds it through the check alone, before any read
    with pytest.raises(StoreCorrupt, match="corrupt"):
        SQLiteStore(path, create=False).health("recs")
    reader.close()


def test_health_checks_once_per_version_and_remembers_corrupt_reads(tmp_path):
    """A clean check is cached per live version; a read that later meets corruption makes
    health report it even though the cached check said the version was sound."""
    from serving.sqlite_store import SQLiteStore

    path = tmp_path / "serving.db"
    writer = SQLiteStore(path)
    writer.publish("recs", [(f"u{i:03d}", b"x" * 300) for i in range(400)])
    writer.close()
    reader = SQLiteStore(path, create=False)
    assert reader.health("recs").version == 1 and reader._clean == {("recs", 1)}
    reader.close()  # this thread's connection caches pages: scribble on the closed file
    corrupt_table(path, "rl_data_recs_1")
    assert reader.health("recs").version == 1  # the cached check: no second quick_check
    with pytest.raises(StoreCorrupt):
        reader.get("recs", "u001")
    with pytest.raises(StoreCorrupt, match="corrupt"):
        reader.health("recs")
    reader.close()


def test_a_rollback_clears_a_corrupt_report(tmp_path):
    from serving.sqlite_store import SQLiteStore

    path = _corrupt_store(tmp_path, versions=2)
    reader = SQLiteStore(path, create=False)
    with pytest.raises(StoreCorrupt):
        reader.health("recs")
    writer = SQLiteStore(path)
    assert writer.rollback("recs", why="version 2 is corrupt").version == 1
    assert reader.health("recs").version == 1
    assert reader.get("recs", "u001")[0] == b"0-" + b"x" * 300
    writer.close()
    reader.close()


def test_redact_text_hides_every_url_in_a_message():
    from serving.store import redact_text

    msg = "cannot open postgresql://ml:hunter2@db:5432/x nor s3://AKIA:hunter2@bucket/k?sig=hunter2"
    out = redact_text(msg)
    assert "postgresql://***@db:5432/x" in out and "s3://***@bucket/k?sig=***" in out
    assert "hunter2" not in out
    assert redact_text("plain text, no URL") == "plain text, no URL"
