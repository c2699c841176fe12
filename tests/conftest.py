"""Shared fixtures: tiny settings under a temporary home, and a few ingested synthetic days."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

TINY = {
    "RANKLINE_N_USERS": "300",
    "RANKLINE_N_ITEMS": "120",
    "RANKLINE_N_CATEGORIES": "6",
    "RANKLINE_IMPRESSIONS_PER_DAY": "6000",
    "RANKLINE_N_ESTIMATORS": "40",
    "RANKLINE_CANDIDATES_PER_USER": "60",
    "RANKLINE_TOP_K": "20",
}
D0 = dt.date(2026, 1, 1)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Tiny-scale settings rooted in a temporary folder."""
    from pipeline.settings import get_settings

    monkeypatch.setenv("RANKLINE_HOME", str(tmp_path / "var"))
    for k, v in TINY.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def source(settings):
    from pipeline.sources import get_source

    return get_source(settings)


@pytest.fixture
def ingested(settings, source):
    """Three raw, validated-by-construction days with features built for each."""
    from feature_store.offline import build_features

    dates = [D0 + dt.timedelta(days=i) for i in range(3)]
    for d in dates:
        source.acquire(d, settings.raw_dir)
        build_features(settings.raw_dir, settings.offline_dir, d)
    return dates


@pytest.fixture(params=["sqlite", "redis"])
def store_spec(request, tmp_path: Path):
    """Fresh data in each store backend; the Redis run removes only its own keys afterwards."""
    from tests.store_support import new_spec, purge, require_redis

    if request.param == "redis":
        require_redis()
    spec = new_spec(request.param, tmp_path)
    yield spec
    purge(spec)


@pytest.fixture
def store(store_spec: str):
    """A store of each backend with tiny batches (so every test crosses batch boundaries)."""
    from tests.store_support import open_spec

    s = open_spec(store_spec, batch_size=7)
    yield s
    s.close()


_OUTCOMES: list[tuple[str, str, str, str]] = []


@pytest.fixture
def reliability():
    """Record one case of the reliability corpus: ``record(kind, case, outcome, message)``.

    With ``RANKLINE_TEST_RELIABILITY_REPORT=<file>`` the session writes every recorded case there as
    a Markdown table (the table in ``bench/RESULTS.md`` comes from it)."""

    def record(kind: str, case: str, outcome: str, message: str) -> None:
        _OUTCOMES.append((kind, case, outcome, " ".join(str(message).split())))

    return record


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("RANKLINE_TEST_RELIABILITY_REPORT")
    if not (path and _OUTCOMES):
        return
    lines = ["| kind | case | outcome | message |", "|---|---|---|---|"]
    for kind, case, outcome, message in sorted(set(_OUTCOMES)):  # a case run on both backends once
        short = message if len(message) <= 300 else message[:297] + "..."
        lines.append(f"| {kind} | {case} | {outcome} | {short.replace('|', '/')} |")
    Path(path).write_text("\n".join(lines) + "\n")
