"""Settings are checked when loaded: every bad value, bad combination or unknown variable is a
:class:`SettingsError` naming the environment variable and what is allowed; no secret leaks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.settings import Settings, SettingsError, get_settings, load_settings
from tests.conftest import TINY

SECRETS = ("s3cr3t", "k3y-s3cr3t")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean ``RANKLINE_*`` environment rooted in a temporary home; returns a setter."""
    for key in list(os.environ):
        if key.upper().startswith("RANKLINE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RANKLINE_HOME", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield lambda **kv: [monkeypatch.setenv(k, v) for k, v in kv.items()]
    get_settings.cache_clear()


def _error(**kv: str) -> str:
    with pytest.MonkeyPatch.context() as mp:
        for k, v in kv.items():
            mp.setenv(k, v)
        with pytest.raises(SettingsError) as err:
            load_settings()
    return str(err.value)


def test_defaults_and_the_test_suite_settings_load(env):
    s = load_settings()
    assert (s.top_k, s.candidates_per_user, s.keep_versions, s.demo_days) == (50, 300, 3, 20)
    assert s.catchup_days == 3  # ingest's catch-up under the scheduler: the last 3 days
    env(**TINY)
    assert load_settings().top_k == 20


@pytest.mark.parametrize("var, value, allowed", [
    ("RANKLINE_TOP_K", "-1", "an integer >= 1 and <= 1000"),
    ("RANKLINE_TOP_K", "0", "an integer >= 1 and <= 1000"),
    ("RANKLINE_TOP_K", "1001", "an integer >= 1 and <= 1000"),
    ("RANKLINE_TOP_K", "ten", "an integer >= 1 and <= 1000"),
    ("RANKLINE_CANDIDATES_PER_USER", "0", "an integer >= 1 and <= 100000"),
    ("RANKLINE_KEEP_VERSIONS", "0", "an integer >= 1 and <= 100"),
    ("RANKLINE_N_USERS", "0", "an integer >= 1"),
    ("RANKLINE_N_ITEMS", "0", "an integer >= 1"),
    ("RANKLINE_N_CATEGORIES", "0", "an integer >= 1"),
    ("RANKLINE_IMPRESSIONS_PER_DAY", "0", "an integer >= 1"),
    ("RANKLINE_SLOTS_PER_REQUEST", "0", "an integer >= 1 and <= 1000"),
    ("RANKLINE_SLOTS_PER_REQUEST", "1001", "an integer >= 1 and <= 1000"),
    ("RANKLINE_DEMO_DAYS", "0", "an integer >= 1"),
    ("RANKLINE_TRAIN_DAYS", "0", "an integer >= 1"),
    ("RANKLINE_VALID_DAYS", "0", "an integer >= 1"),
    ("RANKLINE_TEST_DAYS", "0", "an integer >= 1"),
    ("RANKLINE_NEGATIVES_PER_REQUEST", "-1", "an integer >= 0 and <= 1000"),
    ("RANKLINE_N_ESTIMATORS", "0", "an integer >= 1"),
    ("RANKLINE_MAX_DEPTH", "0", "an integer >= 1 and <= 20"),
    ("RANKLINE_MAX_DEPTH", "21", "an integer >= 1 and <= 20"),
    ("RANKLINE_LEARNING_RATE", "0", "a number > 0 and <= 1"),
    ("RANKLINE_LEARNING_RATE", "1.5", "a number > 0 and <= 1"),
    ("RANKLINE_SCORE_BATCH_ROWS", "0", "an integer >= 1"),
    ("RANKLINE_PUBLISH_LOCK_TTL_S", "0", "a number > 0"),
    ("RANKLINE_STORE_TIMEOUT_S", "-2", "a number > 0"),
    ("RANKLINE_SEED", "-1", "an integer >= 0"),
    ("RANKLINE_SOURCE", "kafka", "one of synthetic, movielens, parquet"),
    ("RANKLINE_STORE_BACKEND", "memcached", "one of sqlite, redis"),
    ("RANKLINE_START_DATE", "2026-13-01", "a date (YYYY-MM-DD)"),
    ("RANKLINE_CATCHUP_DAYS", "-1", "an integer >= 0 and <= 3660"),
    ("RANKLINE_CATCHUP_DAYS", "3661", "an integer >= 0 and <= 3660"),
])
def test_a_bad_value_names_the_variable_and_the_allowed_range(env, var, value, allowed,
                                                              reliability):
    msg = _error(**{var: value})
    reliability("bad setting", f"{var}={value}", "refused at start-up (CLI exit 2, task fails)",
                msg.splitlines()[1])
    field = Settings.model_fields[var.removeprefix("RANKLINE_").lower()]
    assert f"{var}={value}: must be {allowed}" in msg
    assert f"({field.description})" in msg


@pytest.mark.parametrize("var, value, why", [
    ("RANKLINE_REDIS_URL", "http://127.0.0.1:6379/0", "must start with redis://, rediss:// or unix://"),
    ("RANKLINE_REDIS_PREFIX", "", "must not be empty"),
    ("RANKLINE_REDIS_PREFIX", "my app", "must not contain spaces"),
    ("RANKLINE_EXPERIMENT", "", "must not be empty"),
])
def test_bad_strings(env, var, value, why, reliability):
    msg = _error(**{var: value})
    reliability("bad setting", f"{var}={value!r}", "refused at start-up", msg.splitlines()[1])
    assert f"{var}={value or repr('')}: {why}" in msg


@pytest.mark.parametrize("given, needle", [
    ({"RANKLINE_TOP_K": "50", "RANKLINE_CANDIDATES_PER_USER": "20"},
     "RANKLINE_CANDIDATES_PER_USER=20, RANKLINE_TOP_K=50: RANKLINE_CANDIDATES_PER_USER must be "
     ">= RANKLINE_TOP_K"),
    ({"RANKLINE_SOURCE": "parquet"},
     "RANKLINE_SOURCE=parquet, RANKLINE_SOURCE_URI='': source=parquet needs RANKLINE_SOURCE_URI"),
    ({"RANKLINE_N_ITEMS": "5", "RANKLINE_N_CATEGORIES": "6"},
     "RANKLINE_N_CATEGORIES=6, RANKLINE_N_ITEMS=5: RANKLINE_N_CATEGORIES must be <= RANKLINE_N_ITEMS"),
])
def test_a_bad_combination_names_every_variable(env, given, needle, reliability):
    msg = _error(**given)
    reliability("bad setting", ", ".join(f"{k}={v}" for k, v in given.items()),
                "refused at start-up", msg.splitlines()[1])
    assert needle in msg


def test_good_combinations(env):
    env(RANKLINE_DEMO_DAYS="8", RANKLINE_TRAIN_DAYS="4", RANKLINE_VALID_DAYS="1",
        RANKLINE_TEST_DAYS="2", RANKLINE_TOP_K="300", RANKLINE_SOURCE="parquet",
        RANKLINE_SOURCE_URI="/data/lake", RANKLINE_N_ITEMS="3", RANKLINE_N_CATEGORIES="9")
    s = load_settings()  # n_categories > n_items only matters to the synthetic source
    assert (s.demo_days, s.min_demo_days, s.top_k, s.candidates_per_user) == (8, 8, 300, 300)


def test_one_line_per_problem_and_no_traceback_text(env):
    msg = _error(RANKLINE_TOP_K="0", RANKLINE_CANDIDATES_PER_USER="0", RANKLINE_KEEP_VERSIONS="0",
                 RANKLINE_TOPK="5")
    lines = msg.splitlines()
    assert len(lines) == 5 and lines[0].startswith("invalid rankline settings")
    assert [ln.split("=")[0].split(":")[0].strip() for ln in lines[1:]] == [
        "RANKLINE_TOP_K", "RANKLINE_CANDIDATES_PER_USER", "RANKLINE_KEEP_VERSIONS", "RANKLINE_TOPK"]
    for word in ("Traceback", "pydantic", "validation error", "input_value", "top_k "):
        assert word not in msg


def test_unknown_variables_get_a_suggestion(env, reliability):
    msg = _error(RANKLINE_TOPK="5")
    reliability("bad setting", "RANKLINE_TOPK=5 (typo)", "refused at start-up",
                msg.splitlines()[1])
    assert "RANKLINE_TOPK: not a rankline setting; did you mean RANKLINE_TOP_K?" in msg
    assert "did you mean RANKLINE_CANDIDATES_PER_USER?" in _error(
        RANKLINE_CANDIDATE_PER_USER="5")
    msg = _error(RANKLINE_WHATEVER="1")
    assert "RANKLINE_WHATEVER: not a rankline setting; known: RANKLINE_HOME," in msg
    env(RANKLINE_TEST_REDIS_URL="redis://x:1/0", RANKLINE_TEST_RELIABILITY_REPORT="r.md",
        rankline_top_k="7")  # names are case-insensitive
    assert load_settings().top_k == 7


def test_get_settings_raises_the_same_error(env):
    env(RANKLINE_KEEP_VERSIONS="0")
    with pytest.raises(SettingsError, match="RANKLINE_KEEP_VERSIONS=0: must be an integer >= 1"):
        get_settings()
    assert issubclass(SettingsError, ValueError)


def test_no_secret_in_repr_or_messages(env):
    env(RANKLINE_REDIS_URL="redis://u:s3cr3t@127.0.0.1:6379/0", RANKLINE_API_KEY="k3y-s3cr3t",
        RANKLINE_MLFLOW_TRACKING_URI="postgresql://ml:s3cr3t@db/mlflow",
        RANKLINE_SOURCE_URI="s3://bucket/lake?secret_key=s3cr3t")
    s = load_settings()
    assert s.api_key == "k3y-s3cr3t" and "s3cr3t" in s.redis_url  # the values themselves work
    for text in (repr(s), str(s)):
        assert not any(secret in text for secret in SECRETS), text
        assert "redis://***@127.0.0.1:6379/0" in text and "api_key='***'" in text
    msgs = [
        _error(RANKLINE_REDIS_URL="http://u:s3cr3t@127.0.0.1:6379/0"),
        _error(RANKLINE_TOP_K="-1", RANKLINE_APIKEY="k3y-s3cr3t"),
        _error(RANKLINE_SOURCE="parquet", RANKLINE_SOURCE_URI="", RANKLINE_TOP_K="5",
               RANKLINE_CANDIDATES_PER_USER="1"),
    ]
    assert "RANKLINE_REDIS_URL=http://***@127.0.0.1:6379/0: must start with" in msgs[0]
    for msg in msgs:
        assert not any(secret in msg for secret in SECRETS), msg


def test_cli_exits_2_with_the_message_and_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("RANKLINE_", "AIRFLOW"))}
    env.update(RANKLINE_HOME=str(tmp_path / "var"), RANKLINE_TOP_K="-1",
               RANKLINE_API_KEY="k3y-s3cr3t")
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "store", "versions"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "RANKLINE_TOP_K=-1: must be an integer >= 1 and <= 1000" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout and "k3y-s3cr3t" not in res.stderr
    assert not (tmp_path / "var").exists()  # no work done: not even the home folder


@pytest.mark.parametrize("url", ["redis://user:abc/def@h:6379/0", "user:s3cr3t@h:6379"])
def test_a_malformed_redis_url_is_refused_without_its_password(env, url):
    msg = _error(RANKLINE_REDIS_URL=url)
    assert "RANKLINE_REDIS_URL=" in msg and "s3cr3t" not in msg and "abc/def" not in msg


@pytest.mark.parametrize(("given", "written", "tried"), [
    ({}, 5, (0, 5)),
    ({"RANKLINE_SOURCE": "movielens"}, 5, (0, 5)),
    ({"RANKLINE_NEGATIVE_CHOICES": "20,5"}, 20, (0, 5, 20)),
    ({"RANKLINE_NEGATIVE_CHOICES": "0"}, 0, (0,)),
    ({"RANKLINE_SOURCE": "movielens", "RANKLINE_NEGATIVES_PER_REQUEST": "3"}, 3, (0, 5)),
    ({"RANKLINE_NEGATIVES_PER_REQUEST": "0"}, 0, (0, 5)),
])
def test_negatives_written_are_the_fixed_count_or_the_largest_choice(env, given, written, tried):
    env(**given)
    assert load_settings().negatives == written
    assert load_settings().negative_counts == tried


@pytest.mark.parametrize(("threads", "models", "cores", "alone", "family"), [
    (0, "xgboost,neural", 2, 2, 1),  # pre-training alone: both cores; families side by side: 1
    (0, "xgboost", 2, 2, 2),
    (0, "xgboost,neural,neural_scratch", 2, 2, 1),
    (0, "xgboost,neural", 8, 8, 4),
    (0, "xgboost,neural,neural_scratch", 8, 8, 2),
    (0, "xgboost,neural", 1, 1, 1),
    (3, "xgboost,neural", 8, 3, 3),  # set: every step uses it
])
def test_threads_auto_gives_a_lone_step_every_core_and_families_a_share(
        monkeypatch, threads, models, cores, alone, family):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    s = Settings(threads=threads, models=models)
    assert (s.n_threads, s.family_threads) == (alone, family)
