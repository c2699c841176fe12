"""rankline settings: one typed object, read lazily from ``RANKLINE_*`` environment variables.

Nothing happens at import time: no directory is created, no tracking URI is set. Call
:func:`get_settings` where a value is needed; tests call ``get_settings.cache_clear()`` after
changing the environment.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every rankline setting, its default for the embedded laptop run, and what it means."""

    model_config = SettingsConfigDict(env_prefix="RANKLINE_", extra="ignore")

    home: Path = Field(
        default=Path("var"),
        description="Root of all local state: raw data, offline store, MLflow, serving store.",
    )
    source: Literal["synthetic", "movielens", "parquet"] = Field(
        default="synthetic",
        description="Data source: the seeded synthetic marketplace, MovieLens-100K replayed by "
        "timestamp, or an existing Parquet location laid out as raw/<table>/date=D/.",
    )
    source_uri: str = Field(
        default="",
        description="For source=parquet: the root (local path or fsspec URI) holding "
        "<table>/date=D/part-0.parquet.",
    )
    seed: int = Field(default=7, description="Seed of the synthetic marketplace.")
    n_users: int = Field(default=20_000, description="Synthetic users.")
    n_items: int = Field(default=5_000, description="Synthetic items.")
    n_categories: int = Field(default=24, description="Synthetic item categories.")
    impressions_per_day: int = Field(default=300_000, description="Synthetic impressions a day.")
    slots_per_request: int = Field(default=20, description="Items shown per request (page size).")
    start_date: dt.date = Field(
        default=dt.date(2026, 1, 1), description="First logical date of the demo and of catchup."
    )
    demo_days: int = Field(default=14, description="Logical dates the demo ingests.")
    train_days: int = Field(
        default=9, description="Dates of training rows (features as of the day before each)."
    )
    valid_days: int = Field(default=2, description="Dates used for early stopping.")
    test_days: int = Field(default=2, description="Later held-out dates for evaluation.")
    negatives_per_request: int = Field(
        default=5, description="Negatives sampled per request from the match set (not shown)."
    )
    objective: Literal["rank:pairwise", "rank:ndcg"] = Field(
        default="rank:pairwise", description="XGBoost ranking objective."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="XGBoost device; auto picks CUDA when a GPU is visible."
    )
    n_estimators: int = Field(default=300, description="Maximum boosting rounds.")
    max_depth: int = Field(default=6, description="Tree depth.")
    learning_rate: float = Field(default=0.1, description="Boosting learning rate.")
    top_k: int = Field(default=50, description="Recommendations published per user.")
    candidates_per_user: int = Field(
        default=300, description="Candidates scored per user in the hulk refresh."
    )
    score_batch_rows: int = Field(
        default=500_000, description="Rows scored per batch in the hulk refresh (bounds memory)."
    )
    keep_versions: int = Field(default=3, description="Serving-store versions kept for rollback.")
    mlflow_tracking_uri: str = Field(
        default="",
        description="MLflow tracking URI; empty means sqlite:///<home>/mlflow.db with local "
        "artifacts under <home>/mlartifacts.",
    )
    experiment: str = Field(default="rankline", description="MLflow experiment name.")
    store_backend: Literal["sqlite", "redis"] = Field(
        default="sqlite",
        description="Key-value store of served predictions and online features: the embedded "
        "SQLite file, or Redis (production).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis server for store_backend=redis."
    )
    redis_prefix: str = Field(
        default="rankline",
        description="Prefix of every key rankline writes to Redis (several deployments can "
        "share one server).",
    )
    publish_lock_ttl_s: float = Field(
        default=15.0,
        description="Redis publisher lock lease: a killed publisher's lock frees after this long.",
    )
    api_key: str = Field(
        default="",
        description="When set, the serving API requires this value in the X-API-Key header.",
    )
    store_timeout_s: float = Field(
        default=2.0,
        description="Longest a store call may take (Redis socket timeouts; the API answers 503 "
        "after this long instead of waiting on a stalled store).",
    )
    store_path: Path | None = Field(
        default=None, description="SQLite serving store file; default <home>/serving.db."
    )

    @field_validator("home", "store_path")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        return v.expanduser().resolve() if v is not None else None

    @property
    def raw_dir(self) -> Path:
        """Raw partitions: ``raw/<table>/date=D/part-0.parquet`` (never altered)."""
        return self.home / "raw"

    @property
    def oracle_dir(self) -> Path:
        """Hidden ground truth of the synthetic source, kept apart from every feature."""
        return self.home / "oracle"

    @property
    def quarantine_dir(self) -> Path:
        """Copies of failing partitions with their validation results and Data Docs."""
        return self.home / "quarantine"

    @property
    def validation_dir(self) -> Path:
        """Validation results and Data Docs of every validated partition."""
        return self.home / "validation"

    @property
    def offline_dir(self) -> Path:
        """Offline feature store: ``offline/<entity>/date=D/part-0.parquet``."""
        return self.home / "offline"

    @property
    def work_dir(self) -> Path:
        """Intermediate artifacts keyed by run (training sets, evaluation tables)."""
        return self.home / "work"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI actually used."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        """Where a new experiment stores its artifacts when tracking is local."""
        return (self.home / "mlartifacts").resolve().as_uri()

    @property
    def serving_store_path(self) -> Path:
        """SQLite serving-store file."""
        return self.store_path or self.home / "serving.db"

    @property
    def online_store_path(self) -> Path:
        """SQLite online-feature store file (with Redis, the ``features`` namespace)."""
        return self.home / "online_features.db"

    def demo_dates(self) -> list[dt.date]:
        """The logical dates the demo ingests, oldest first."""
        return [self.start_date + dt.timedelta(days=i) for i in range(self.demo_days)]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
