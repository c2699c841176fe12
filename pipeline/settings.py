"""rankline settings: one typed object, read lazily from ``RANKLINE_*`` environment variables.

Nothing happens at import time: no directory is created, no tracking URI is set. Call
:func:`get_settings` where a value is needed; tests call ``get_settings.cache_clear()`` after
changing the environment.

Every value is checked when the settings are loaded, before any work: a bad value, a bad
combination or an unknown ``RANKLINE_*`` variable raises :class:`SettingsError`, whose message
names each environment variable, the value given and what is allowed, one line per problem.
Secrets (the API key, passwords inside URLs) never appear in that message nor in ``repr``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import types
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.event_labels import DEFAULT_EVENT_LABELS, EventLabels, parse_event_labels
from serving.store import redact_url  # one redaction for every layer (serving imports nothing)

ENV_PREFIX = "RANKLINE_"
TEST_PREFIX = "RANKLINE_TEST_"
"""Variables of the test suite (``RANKLINE_TEST_REDIS_URL``…): not settings, never an error."""
SECRET_FIELDS = frozenset({"api_key"})
"""Shown as ``***`` wherever settings are printed."""
POOL_NAMES = ("popular", "category", "co_clicks", "new_items", "embedding")
"""The hulk refresh's candidate pools (:mod:`pipeline.pools` implements them)."""
URL_FIELDS = frozenset({"redis_url", "mlflow_tracking_uri", "source_uri", "airflow_db_url"})
"""Shown through :func:`redact_url` (their password or token hidden)."""
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
DEMO_DAYS_RULE = "RANKLINE_TRAIN_DAYS + RANKLINE_VALID_DAYS + RANKLINE_TEST_DAYS + 1"


class SettingsError(ValueError):
    """Invalid rankline settings; ``problems`` holds one line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid rankline settings (environment variables):\n"
                         + "\n".join(f"  {p}" for p in self.problems))


class _CrossFieldProblems(ValueError):
    """Raised by the model validator: several lines, each naming every variable involved."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class Settings(BaseSettings):
    """Every rankline setting, its default for the embedded laptop run, and what it means."""

    model_config = SettingsConfigDict(env_prefix="RANKLINE_", extra="ignore")

    home: Path = Field(
        default=Path("var"),
        description="Root of all local state: raw data, offline store, MLflow, serving store.",
    )
    source: Literal["synthetic", "movielens", "parquet", "interactions"] = Field(
        default="synthetic",
        description="Data source: the seeded synthetic marketplace, MovieLens-100K replayed by "
        "timestamp, an existing Parquet location laid out as raw/<table>/date=D/ (the funnel "
        "tables), or one generic interaction log at interactions/date=D/.",
    )
    source_uri: str = Field(
        default="",
        description="For source=parquet or interactions: the root (local path or fsspec URI) "
        "holding <table>/date=D/*.parquet.",
    )
    event_labels: str = Field(
        default=DEFAULT_EVENT_LABELS,
        description="For source=interactions: graded labels of the log's rows, either by "
        "event_type (view:0,click:1,cart:2,purchase:3) or by thresholds on value "
        "(value>=3:1,value>=4:2,value>=5:3); labels 0-3.",
    )
    seed: int = Field(default=7, ge=0, le=2**31 - 1, description="Seed of the synthetic marketplace.")
    n_users: int = Field(default=20_000, ge=1, le=100_000_000, description="Synthetic users.")
    n_items: int = Field(default=1_500, ge=1, le=100_000_000, description="Synthetic items.")
    n_categories: int = Field(default=24, ge=1, le=100_000, description="Synthetic item categories.")
    impressions_per_day: int = Field(default=150_000, ge=1, le=1_000_000_000,
                                     description="Synthetic impressions a day.")
    slots_per_request: int = Field(default=20, ge=1, le=1000,
                                   description="Items shown per request (page size).")
    new_items_per_day: int = Field(
        default=2, ge=0, le=1_000_000,
        description="Synthetic items launched a day after the start date (the catalog grows for "
        "60 days; at most a fifth of the items launch late); 0: every item on sale from the "
        "start.")
    start_date: dt.date = Field(
        default=dt.date(2026, 1, 1), description="First logical date of the demo and of catchup."
    )
    catchup_days: int = Field(
        default=3, ge=0, le=3660,
        description="Days of ingest's catch-up under the scheduler: its start date is the "
        "later of RANKLINE_START_DATE and today minus this many days (read when the DAG is "
        "parsed), so unpausing it or restarting after an outage runs at most the last N days "
        "(0: none, from today on); older dates by airflow backfill create or rankline run-dag.",
    )
    demo_days: int = Field(default=20, ge=1, le=3660, description="Logical dates the demo ingests.")
    train_days: int = Field(
        default=9, ge=1, le=3660,
        description="Dates of training rows (features as of the day before each).",
    )
    valid_days: int = Field(default=2, ge=1, le=3660, description="Dates used for early stopping.")
    test_days: int = Field(default=2, ge=1, le=3660, description="Later held-out dates for evaluation.")
    negatives_per_request: int | None = Field(
        default=None, ge=0, le=1000,
        description="Negatives sampled per request from the match set (items the request did "
        "not show, from RANKLINE_NEGATIVE_SOURCE), label 0, in the training rows. Unset: "
        "chosen per log on the validation dates among RANKLINE_NEGATIVE_CHOICES (the train "
        "DAG's training_set task; recorded in its MLflow run), judged as the held-out "
        "evaluation judges: a count other than 0 only when its paired interval over the "
        "validation groups is above zero.",
    )
    negative_choices: str = Field(
        default="0,5", pattern=r"^[0-9]+(,[0-9]+)*$",
        description="The negatives per request the validation choice tries when "
        "RANKLINE_NEGATIVES_PER_REQUEST is unset (0 is always tried).",
    )
    negative_source: Literal["popularity", "uniform"] | None = Field(
        default=None,
        description="Where the sampled negatives come from: popularity (drawn in proportion to "
        "the items' clicks over the last 7 days, plus a floor) or uniform (every item of the "
        "match set alike). Unset: chosen per log on the validation dates among "
        "RANKLINE_NEGATIVE_SOURCES, as the count is. Every sampled negative weighs as much as "
        "a shown item (XGBoost's ranking objectives weigh groups, not rows): their influence "
        "is set by their count, which 0 switches off.",
    )
    negative_sources: str = Field(
        default="popularity,uniform", pattern=r"^(popularity|uniform)(,(popularity|uniform))*$",
        description="The sources of negatives the validation choice tries when "
        "RANKLINE_NEGATIVE_SOURCE is unset (each with every count above 0 of "
        "RANKLINE_NEGATIVE_CHOICES).",
    )
    models: str = Field(
        default="xgboost,neural", pattern=r"^[a-z0-9_]+(,[a-z0-9_]+)*$",
        description="Model families trained by the train DAG (comma list, one task each); the "
        "best that passes the gate becomes the champion. Known: xgboost (gradient-boosted "
        "ranking), neural (sequence encoder pre-trained then fine-tuned), neural_scratch (the "
        "same network from random weights: the control for pre-training).",
    )
    neural_epochs: int = Field(default=4, ge=1, le=1000,
                               description="Maximum epochs of the neural rankers (early stopping "
                               "on validation NDCG@10); 4 keeps `make demo` under 10 minutes on 2 "
                               "cores, where validation NDCG@10 still rose slowly up to epoch 6.")
    neural_lr: float = Field(default=2e-3, gt=0, le=1.0,
                             description="Learning rate of the neural rankers' head.")
    finetune: Literal["lower_lr", "frozen"] = Field(
        default="lower_lr", description="How the neural ranker uses the pre-trained encoder: "
        "fine-tuned with RANKLINE_FINETUNE_LR_SCALE x the head's rate, or frozen.")
    finetune_lr_scale: float = Field(default=0.1, gt=0, le=1.0,
                                     description="Encoder learning rate / head learning rate "
                                     "when fine-tuning.")
    embed_dim: int = Field(default=64, ge=4, le=1024,
                           description="Embedding size of the sequence encoder.")
    seq_len: int = Field(default=50, ge=2, le=100,
                         description="Items of a user's history the sequence encoder reads.")
    pretrain_epochs: int = Field(default=20, ge=1, le=1000,
                                 description="Maximum pre-training epochs (early stopping on "
                                 "held-out users' next-item cross-entropy, patience 6).")
    encoder_features: bool = Field(
        default=True, description="Build the pre-trained encoder's embedding feature views "
        "(encoder_user, encoder_item) and give every family the feature od_encoder_score; "
        "the train DAG then pre-trains an encoder whatever RANKLINE_MODELS says.")
    pretrain_every_days: int = Field(
        default=7, ge=0, le=3660,
        description="Pre-train again only when the newest encoder checkpoint's data ends this "
        "many days or more before the training window's end (0: every train).")
    objective: Literal["rank:pairwise", "rank:ndcg"] = Field(
        default="rank:pairwise", description="XGBoost ranking objective."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Training device of every family; auto picks CUDA when a "
        "GPU is visible (bf16 autocast for the neural families)."
    )
    n_estimators: int = Field(default=300, ge=1, le=100_000, description="Maximum boosting rounds.")
    max_depth: int = Field(default=6, ge=1, le=20, description="Tree depth.")
    learning_rate: float = Field(default=0.1, gt=0, le=1, description="Boosting learning rate.")
    dask_workers: int = Field(
        default=0, ge=0, le=1024,
        description="XGBoost on Dask: 0 trains in the task's process; N starts a LocalCluster of N "
        "worker processes on this host for each fit (127.0.0.1, closed afterwards).",
    )
    dask_scheduler: str = Field(
        default="", max_length=500,
        description="Address of a running Dask scheduler (tcp://host:8786): XGBoost trains on "
        "that cluster (wins over RANKLINE_DASK_WORKERS); empty: see RANKLINE_DASK_WORKERS.",
    )
    sweep_trials: int = Field(
        default=20, ge=1, le=10_000,
        description="Trials of a sweep (the sweep DAG, rankline sweep), each a mapped task.")
    sweep_parallel: int = Field(
        default=2, ge=1, le=1024,
        description="Trials of one sweep that run at once (the sweep DAG's mapped tasks).")
    sweep_sampler: Literal["tpe", "random", "grid"] = Field(
        default="tpe", description="Optuna sampler of sweeps: tpe, random or grid (the family's "
        "grid; at most its size in trials).")
    sweep_storage: str = Field(
        default="", max_length=1000,
        description="Optuna storage of sweeps: an RDB URL (postgresql://...) shared by every "
        "worker; empty: a journal file under RANKLINE_HOME/sweeps.")
    sweep_defaults: bool = Field(
        default=True,
        description="train starts each family from the best parameters of its newest sweep "
        "(false: from the settings alone).")
    drop_features: str = Field(
        default="", max_length=10_000,
        description="Model features every family leaves out (comma-separated; set to missing "
        "in training and scoring): a feature selection's proposal, accepted "
        "(rankline select-features prints it). Empty: every feature.")
    unbiased: bool | None = Field(
        default=None,
        description="Position-debiased training from clicks: XGBoost's unbiased LambdaMART "
        "(lambdarank_unbiased), inverse-propensity weighted clicks for the neural families "
        "(propensities estimated from the training rows' logged positions). Unset: chosen per "
        "log on the validation dates when the logs have positions (debiased only when its "
        "paired interval over the validation groups is above zero); false: clicks as logged.",
    )
    stream_rows: bool = Field(
        default=False,
        description="Every family reads the training rows one date at a time (XGBoost into "
        "an external-memory matrix on disk; the neural families a date after another each "
        "epoch), so memory is bounded by a date's rows, not the training window's (false: "
        "one frame of every row, in memory).")
    checkpoint_rounds: int = Field(
        default=25, ge=1, le=100_000,
        description="XGBoost writes a checkpoint every N boosting rounds, which a retried train "
        "task resumes (torch families: every epoch).")
    ddp_procs: int = Field(
        default=1, ge=1, le=1024,
        description="torch training (the neural families) on N torchrun worker processes per "
        "host, gradients all-reduced by DDP (1: in the task's process); the task's threads "
        "are shared among them. With CUDA, one GPU per process.")
    ddp_nnodes: int = Field(
        default=1, ge=1, le=4096,
        description="Hosts of torch training; above 1 each other host runs the torchrun "
        "command the train task logs, and RANKLINE_HOME must be storage every host shares.")
    ddp_rdzv_endpoint: str = Field(
        default="", max_length=500, pattern=r"^$|^[^\s:]+:\d+$",
        description="host:port of the c10d rendezvous of a several-host torch training "
        "(a host every node reaches; the train task's host is fine).")
    ddp_rdzv_id: str = Field(
        default="", max_length=200, pattern=r"^[A-Za-z0-9_.-]*$",
        description="Rendezvous id of a several-host training (empty: the training run's id).")
    ddp_backend: Literal["auto", "nccl", "gloo"] = Field(
        default="auto", description="torch.distributed backend: auto is NCCL when the workers "
        "train on CUDA, gloo otherwise.")
    threads: int = Field(
        default=0, ge=0, le=1024,
        description="Threads of every trainer and of the hulk scorer; 0 = auto: a step that runs "
        "alone (pre-training, evaluation, the hulk scorer) uses every core this process may use, "
        "each family's training (run beside the others) its share: cores / families, at least 1.",
    )
    gate_min_groups: int = Field(
        default=100, ge=1, le=10_000_000,
        description="Fewest held-out groups on which the promotion gate decides at all.",
    )
    gate_confidence: float = Field(
        default=0.95, gt=0.5, lt=1,
        description="Confidence of the paired bootstrap interval of the per-group NDCG@10 "
        "difference; promotion needs its lower bound above zero.",
    )
    gate_bootstrap: int = Field(
        default=1000, ge=100, le=100_000,
        description="Bootstrap resamples (over held-out groups) of the promotion gate.",
    )
    consumed: str = Field(
        default="purchases", pattern=r"^(impressions|clicks|add_to_cart|purchases)"
        r"(,(impressions|clicks|add_to_cart|purchases))*$",
        description="Event tables whose items count as consumed and are never recommended to "
        "that user again (comma list): purchases for repeat-purchase catalogs, "
        "clicks,add_to_cart,purchases (or impressions) for media.",
    )
    history_days: int = Field(
        default=28, ge=1, le=3660,
        description="Users with any interaction in this many days up to the refresh date get a "
        "personal list (others the cold-start list).",
    )
    top_k: int = Field(default=50, ge=1, le=1000, description="Recommendations published per user.")
    candidates_per_user: int = Field(
        default=300, ge=1, le=100_000,
        description="Candidates scored per user in the hulk refresh (the top k are kept).",
    )
    pools: str = Field(
        default="", pattern=r"^$|^[a-z_]+:[0-9]+(,[a-z_]+:[0-9]+)*$",
        description="Candidate pools of the hulk refresh and the candidates each gives per user, "
        "as pool:n,pool:n (pools: popular, category, co_clicks, new_items, embedding); empty: "
        "popular, category, co_clicks and embedding sharing the candidates per user in quarters "
        "(in thirds without embedding when RANKLINE_ENCODER_FEATURES is off).",
    )
    exact_retrieval_up_to: int = Field(
        default=100_000, ge=0, le=1_000_000_000,
        description="The embedding pool searches the encoder's space exactly (a matrix product "
        "over the whole catalog) up to this many items on sale, with an approximate index (a "
        "faiss inverted file) above; bench/ann.py measured both.",
    )
    blend: Literal["merged", "thompson", "greedy", "fixed"] = Field(
        default="merged",
        description="How the refresh mixes its pools: merged keeps the k best candidates by the "
        "champion's score whatever their pool; thompson blends the pools per user in the ratio "
        "of draws from each (user, pool) Beta posterior; greedy in the ratio of the posterior "
        "means; fixed in the ratio of RANKLINE_BLEND_FIXED.",
    )
    blend_order: Literal["score", "even"] = Field(
        default="score",
        description="Order of a blended list: score sorts the items the blend chose by the "
        "champion's score; even interleaves the pools in the ratio of their slots (each pool's "
        "own order is the champion's either way). Simulated, even cost 8 % of the purchases "
        "(the best items lose the top positions) and showed new items ten times as often: "
        "bench/blending.py.",
    )
    blend_new_user_order: Literal["even", "score"] = Field(
        default="even",
        description="Order of a new user's blended list (fewer logged impressions on the "
        "blended pools than RANKLINE_BLEND_PRIOR_STRENGTH: the prior outweighs their evidence): "
        "even interleaves the pools, so the first slots show some of every pool (as the "
        "cold-start list); score follows RANKLINE_BLEND_ORDER.",
    )
    blend_fixed: str = Field(
        default="", pattern=r"^$|^[0-9.]+(,[0-9.]+)*$",
        description="The fixed policy's shares, one per pool in RANKLINE_POOLS' order; empty: "
        "equal shares.",
    )
    blend_prior_strength: float = Field(
        default=20.0, gt=0, le=1e6,
        description="Weight of each pool's global rate in every user's posterior, in "
        "pseudo-impressions (a new user's posterior is that prior).",
    )
    blend_min_slots: int = Field(
        default=1, ge=0, le=1000,
        description="Slots every pool with candidates gets before the rest is shared by the "
        "blend's weights (keeps every pool explored).",
    )
    new_item_days: int = Field(
        default=7, ge=1, le=3660,
        description="An item first seen in this many days up to the refresh date is new (the "
        "new_items pool).",
    )
    score_batch_rows: int = Field(
        default=500_000, ge=1, le=1_000_000_000,
        description="Rows scored per batch in the hulk refresh (bounds memory).",
    )
    keep_versions: int = Field(default=3, ge=1, le=100,
                               description="Serving-store versions kept for rollback.")
    mlflow_tracking_uri: str = Field(
        default="",
        description="MLflow tracking URI; empty means sqlite:///<home>/mlflow.db with local "
        "artifacts under <home>/mlartifacts.",
    )
    experiment: str = Field(default="rankline", min_length=1, description="MLflow experiment name.")
    airflow_db_url: str = Field(
        default="", pattern=r"^$|^(sqlite|postgresql(\+psycopg2?)?|mysql(\+\w+)?)://",
        description="Airflow's metadata database (SQLAlchemy URL); empty means "
        "sqlite:///<home>/airflow/airflow.db. Production: Postgres, e.g. "
        "postgresql+psycopg://user:password@host:5432/airflow.",
    )
    store_backend: Literal["sqlite", "redis"] = Field(
        default="sqlite",
        description="Key-value store of served predictions and online features: the embedded "
        "SQLite file, or Redis (production).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis server for store_backend=redis (redis://, rediss:// or unix://).",
    )
    redis_prefix: str = Field(
        default="rankline", min_length=1, pattern=r"^\S+$",
        description="Prefix of every key rankline writes to Redis (several deployments can "
        "share one server).",
    )
    publish_lock_ttl_s: float = Field(
        default=15.0, gt=0, le=86_400,
        description="Redis publisher lock lease: a killed publisher's lock frees after this long.",
    )
    api_key: str = Field(
        default="",
        description="When set, the serving API requires this value in the X-API-Key header.",
    )
    store_timeout_s: float = Field(
        default=2.0, gt=0, le=3600,
        description="Longest a store call may wait for one reply (Redis socket and connect "
        "timeouts, for readers and publishers alike); the API answers 503 after this long "
        "instead of waiting on a stalled store.",
    )
    store_path: Path | None = Field(
        default=None, description="SQLite serving store file; default <home>/serving.db."
    )

    def __init__(self, **values: Any) -> None:
        """Read and check every setting; a :class:`SettingsError` names what is wrong."""
        try:
            super().__init__(**values)
        except ValidationError as exc:  # its text holds the raw input, secrets included
            raise SettingsError(_problems(exc)) from None

    @field_validator("home", "store_path")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        return v.expanduser().resolve() if v is not None else None

    @field_validator("event_labels")
    @classmethod
    def _event_labels(cls, v: str) -> str:
        parse_event_labels(v)  # its ValueError says which entry is wrong
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v: str) -> str:
        from models.registry import FAMILIES

        names = v.split(",")
        if unknown := [n for n in names if n not in FAMILIES]:
            raise ValueError(f"unknown model famil{'y' if len(unknown) == 1 else 'ies'} "
                             f"{', '.join(unknown)}; known: {', '.join(FAMILIES)}")
        if len(set(names)) < len(names):
            raise ValueError("names a family twice")
        return v

    @field_validator("drop_features")
    @classmethod
    def _drop_features(cls, v: str) -> str:
        from feature_store.definitions import model_features

        names = [n.strip() for n in v.split(",") if n.strip()]
        if unknown := sorted(set(names) - set(model_features())):
            raise ValueError(f"unknown features {unknown}; the model features are "
                             f"{', '.join(model_features())}")
        return ",".join(names)

    @property
    def dropped_features(self) -> tuple[str, ...]:
        """The features of ``RANKLINE_DROP_FEATURES``."""
        return tuple(self.drop_features.split(",")) if self.drop_features else ()

    @property
    def model_families(self) -> list[str]:
        """The families of ``RANKLINE_MODELS``, in the order given."""
        return self.models.split(",")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if not v.startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with {', '.join(REDIS_SCHEMES[:-1])} or {REDIS_SCHEMES[-1]}")
        try:
            urlsplit(v).port  # noqa: B018 - parses the host part, as redis-py will
        except ValueError:
            raise ValueError("is not a valid URL (percent-encode '/', '#', '?' and '@' in the "
                             "password, e.g. %2F for '/')") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if problems := self.cross_field_problems():
            raise _CrossFieldProblems(problems)
        return self

    @property
    def pool_sizes(self) -> dict[str, int]:
        """``RANKLINE_POOLS`` as {pool: candidates per user}, in its order."""
        if not self.pools:
            from pipeline.pools import default_sizes

            return default_sizes(self.candidates_per_user, self.encoder_features)
        return {name: int(n) for name, n in (p.split(":") for p in self.pools.split(","))}

    @property
    def fixed_shares(self) -> list[float]:
        """The fixed blend's share per pool (``RANKLINE_BLEND_FIXED``; equal when empty)."""
        if not self.blend_fixed:
            return [1.0] * len(self.pool_sizes)
        return [float(x) for x in self.blend_fixed.split(",")]

    @property
    def min_demo_days(self) -> int:
        """Dates the demo must ingest: training as of its last date reads train+valid+test
        dates, each with features as of the day before."""
        return self.train_days + self.valid_days + self.test_days + 1

    def cross_field_problems(self) -> list[str]:
        """Problems of combinations of settings, each naming every variable involved."""
        out = []
        if self.candidates_per_user < self.top_k:
            out.append(f"{self._given('candidates_per_user', 'top_k')}: "
                       f"{env_name('candidates_per_user')} must be >= {env_name('top_k')} "
                       "(the top k are chosen among the candidates scored per user)")
        sizes = self.pool_sizes
        if sum(sizes.values()) < self.top_k:
            out.append(f"{self._given('pools', 'top_k')}: the pools' candidates per user "
                       f"({sum(sizes.values())}) must be >= {env_name('top_k')}")
        if unknown := sorted(set(sizes) - set(POOL_NAMES)):
            out.append(f"{self._given('pools')}: unknown pool(s) {', '.join(unknown)}; known: "
                       f"{', '.join(POOL_NAMES)}")
        if self.blend_fixed and len(self.blend_fixed.split(",")) != len(sizes):
            out.append(f"{self._given('blend_fixed', 'pools')}: one share per pool "
                       f"({len(sizes)}: {', '.join(sizes)})")
        try:
            shares = [float(x) for x in self.blend_fixed.split(",")] if self.blend_fixed else []
        except ValueError:
            shares = [-1.0]
        if shares and (min(shares) < 0 or sum(shares) <= 0):
            out.append(f"{self._given('blend_fixed')}: shares are numbers >= 0, not all 0 "
                       "(e.g. 0.5,0.3,0.2)")
        if self.source in ("parquet", "interactions") and not self.source_uri:
            out.append(f"{self._given('source', 'source_uri')}: source={self.source} needs "
                       f"{env_name('source_uri')} (the root holding <table>/date=D/)")
        if self.source == "synthetic" and self.n_categories > self.n_items:
            out.append(f"{self._given('n_categories', 'n_items')}: {env_name('n_categories')} "
                       f"must be <= {env_name('n_items')} (every category has an item)")
        if self.ddp_nnodes > 1 and not self.ddp_rdzv_endpoint:
            out.append(f"{self._given('ddp_nnodes', 'ddp_rdzv_endpoint')}: training on several "
                       f"hosts needs {env_name('ddp_rdzv_endpoint')}=host:port (a rendezvous "
                       "every host reaches)")
        return out

    def _given(self, *names: str) -> str:
        return ", ".join(f"{env_name(n)}={_shown(n, getattr(self, n))}" for n in names)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            secret = name in SECRET_FIELDS | URL_FIELDS and value
            yield name, (_shown(name, value) if secret else value)

    @property
    def n_threads(self) -> int:
        """The threads of a step that runs alone (pre-training, evaluation, the hulk scorer):
        ``RANKLINE_THREADS``, or with 0 every core this process may use."""
        if self.threads:
            return self.threads
        return len(os.sched_getaffinity(0))

    @property
    def ddp(self) -> Any:
        """The :class:`models.ddp.DdpConfig` of the ``RANKLINE_DDP_*`` settings."""
        from models.ddp import DdpConfig

        return DdpConfig(procs=self.ddp_procs, nnodes=self.ddp_nnodes,
                         rdzv_endpoint=self.ddp_rdzv_endpoint, rdzv_id=self.ddp_rdzv_id,
                         backend=self.ddp_backend)

    @property
    def family_threads(self) -> int:
        """The threads of one family's training, which runs beside the other families' (one
        task each): ``RANKLINE_THREADS``, or with 0 a share of the cores (cores / families, at
        least 1): two thread pools over one core ran XGBoost 4-6x slower than one thread."""
        cores = self.n_threads
        return cores if self.threads else max(1, cores // min(len(self.model_families), cores))

    @property
    def negatives(self) -> int:
        """The negatives sampled per request into the written rows: ``RANKLINE_NEGATIVES_PER_
        REQUEST``, or when unset the largest of ``RANKLINE_NEGATIVE_CHOICES`` (the training
        set keeps the chosen number of them: ``pipeline.row_choice``)."""
        if self.negatives_per_request is not None:
            return self.negatives_per_request
        return max(self.negative_counts)

    @property
    def negative_source_choices(self) -> tuple[str, ...]:
        """The sources the row choice tries: ``RANKLINE_NEGATIVE_SOURCE``, or every one of
        ``RANKLINE_NEGATIVE_SOURCES`` (in its order, each once)."""
        if self.negative_source is not None:
            return (self.negative_source,)
        return tuple(dict.fromkeys(self.negative_sources.split(",")))

    @property
    def negative_counts(self) -> tuple[int, ...]:
        """``RANKLINE_NEGATIVE_CHOICES`` as numbers, 0 first, each once."""
        return tuple(sorted({0, *(int(x) for x in self.negative_choices.split(","))}))

    @property
    def event_label_map(self) -> EventLabels:
        """``RANKLINE_EVENT_LABELS`` parsed."""
        return parse_event_labels(self.event_labels)

    @property
    def consumed_tables(self) -> tuple[str, ...]:
        """The event tables of ``RANKLINE_CONSUMED``."""
        return tuple(self.consumed.split(","))

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


def env_name(field: str) -> str:
    """The environment variable of a setting: ``top_k`` -> ``RANKLINE_TOP_K``."""
    return ENV_PREFIX + field.upper()


def _shown(field: str, value: Any) -> str:
    """A value as it may be printed: secrets hidden, URLs without their password."""
    if field in SECRET_FIELDS:
        return "***" if value else "''"
    if field in URL_FIELDS:
        return redact_url(str(value)) if value else "''"
    return str(value) if value != "" else "''"


def _env_value(field: str) -> str | None:
    """The raw value of a setting's variable (names are case-insensitive, as pydantic reads them)."""
    want = env_name(field)
    return next((v for k, v in os.environ.items() if k.upper() == want), None)


def _allowed(info: FieldInfo) -> str:
    """What a field accepts, in words: ``an integer >= 1 and <= 1000``."""
    ann = info.annotation
    if isinstance(ann, types.UnionType):  # optional (X | None): unset means "decided for you"
        ann = next((a for a in ann.__args__ if a is not type(None)), ann)
    kind = {int: "an integer", float: "a number", dt.date: "a date (YYYY-MM-DD)"}.get(ann)
    if kind is None and getattr(ann, "__origin__", None) is Literal:
        return "one of " + ", ".join(map(str, ann.__args__))
    bounds = [f"{op} {getattr(m, attr)}" for m in info.metadata
              for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if getattr(m, attr, None) is not None]
    return " ".join([kind or "a value", " and ".join(bounds)]).strip()


def _problems(exc: ValidationError) -> list[str]:
    """One line per problem of a failed validation, naming the environment variable."""
    out: list[str] = []
    fields = Settings.model_fields
    for err in exc.errors():
        error = (err.get("ctx") or {}).get("error")
        if not err["loc"]:  # the model validator
            out.extend(error.problems if isinstance(error, _CrossFieldProblems) else [err["msg"]])
            continue
        name = str(err["loc"][0])
        info = fields.get(name)
        if info is None:
            out.append(f"{name}: {err['msg']}")
            continue
        raw = _env_value(name)
        shown = _shown(name, raw if raw is not None else err.get("input"))
        if isinstance(error, ValueError):
            why = str(error)
        elif err["type"] == "string_too_short":
            why = "must not be empty"
        elif err["type"] == "string_pattern_mismatch":
            why = "must not contain spaces"
        else:
            why = f"must be {_allowed(info)}"
        out.append(f"{env_name(name)}={shown}: {why} ({info.description})")
    return out


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """A problem line per ``RANKLINE_*`` variable that names no setting (typos), with the
    nearest known name; ``RANKLINE_TEST_*`` variables belong to the test suite."""
    environ = os.environ if environ is None else environ
    fields = list(Settings.model_fields)
    out = []
    for key in sorted(environ):
        name = key.upper()
        if not name.startswith(ENV_PREFIX) or name.startswith(TEST_PREFIX):
            continue
        field = name.removeprefix(ENV_PREFIX).lower()
        if field in fields:
            continue
        near = difflib.get_close_matches(field, fields, n=1, cutoff=0.6)
        hint = (f"did you mean {env_name(near[0])}?" if near
                else f"known: {', '.join(env_name(f) for f in fields)}")
        out.append(f"{key}: not a rankline setting; {hint}")
    return out


def load_settings() -> Settings:
    """Read the settings from the environment and check them all, before any work.

    Raises:
        SettingsError: one line per problem: bad values, bad combinations, unknown variables.
    """
    problems = unknown_variables()
    try:
        settings = Settings()
    except SettingsError as exc:
        problems = exc.problems + problems
    if problems:
        raise SettingsError(problems) from None
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment and checked on first use.

    Raises:
        SettingsError: see :func:`load_settings`.
    """
    return load_settings()
