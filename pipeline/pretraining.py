"""The pre-training step of the train DAG, and the encoder's embedding feature views.

A sequence encoder (:mod:`models.sequence`) learns from the ``user_sequence`` view as of the day
before the split's first training date: it never sees a date whose rows train, validate or test a
ranker, so its embeddings can be features of those rows without leaking their labels
(``feature_store.embeddings``). A new one is trained only when the newest logged encoder's data
ends ``RANKLINE_PRETRAIN_EVERY_DAYS`` or more days before that date (or there is none, or all
end after it: a backfill); otherwise the newest is reused. Each encoder is logged to the train
DAG run's MLflow run: ``encoder/encoder.pt`` (weights, vocabulary, configuration),
``encoder/item_embeddings.parquet``, the loss, held-out loss and hit-rate curves, samples per
second, and the tag ``encoder_data_end``.

The embedding views of date D are computed with the newest encoder whose data ends by D
(:func:`embed_dates`): by the ingest DAG for each new date, and by the pre-training step for the
split's feature dates after it trains a new encoder. The neural families start from the encoder
itself; every family reads ``od_encoder_score``. With ``RANKLINE_ENCODER_FEATURES=false`` the
views are not built and an encoder is pre-trained only for a family that starts from one.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)

ARTIFACT = "encoder/encoder.pt"
DATA_END_TAG = "encoder_data_end"


def family_class(name: str) -> type:
    """The class of a model family (``models.registry``)."""
    from models.registry import family_class as lookup

    return lookup(name)


def needs_encoder(settings: Settings) -> bool:
    """Whether the train DAG needs an encoder: for the embedding features
    (``RANKLINE_ENCODER_FEATURES``) or for a family of ``RANKLINE_MODELS`` that starts from one."""
    return settings.encoder_features or any(family_class(f).needs_pretrained
                                            for f in settings.model_families)


def logged_encoders(settings: Settings) -> list[tuple[str, dt.date]]:
    """``(run id, data end)`` of every logged encoder, oldest data first."""
    import mlflow

    from pipeline.tracking import configure

    runs = mlflow.search_runs([configure(settings)],
                              filter_string=f"tags.{DATA_END_TAG} != ''", output_format="list")
    return sorted(((r.info.run_id, dt.date.fromisoformat(r.data.tags[DATA_END_TAG]))
                   for r in runs), key=lambda x: (x[1], x[0]))


def newest_encoder(settings: Settings, end: dt.date) -> tuple[str, dt.date] | None:
    """``(run id, data end)`` of the newest logged encoder whose data ends by ``end``."""
    return _newest(logged_encoders(settings), end)


def _newest(encoders: list[tuple[str, dt.date]], end: dt.date) -> tuple[str, dt.date] | None:
    found = [e for e in encoders if e[1] <= end]
    return found[-1] if found else None


def pretrain_encoder(settings: Settings, split: dict[str, list[str]],
                     run_id: str) -> dict[str, Any] | None:
    """The split's encoder, reused or newly pre-trained (see the module), and the embedding
    views of the split's feature dates (with ``RANKLINE_ENCODER_FEATURES``).

    Returns ``{"uri", "data_end", "reused", "embedded"}`` (``uri``: an MLflow artifact URI;
    ``embedded``: ``{date: encoder run}`` of the views (re)computed), or None when nothing needs
    an encoder.
    """
    if not needs_encoder(settings):
        log.info("no family of RANKLINE_MODELS=%s starts from an encoder and "
                 "RANKLINE_ENCODER_FEATURES is off: nothing to pre-train", settings.models)
        return None
    end = dt.date.fromisoformat(split["train"][0]) - dt.timedelta(days=1)
    newest = newest_encoder(settings, end)
    if newest and (end - newest[1]).days < settings.pretrain_every_days:
        log.info("reusing the encoder of run %s (data up to %s; RANKLINE_PRETRAIN_EVERY_DAYS=%d)",
                 newest[0], newest[1], settings.pretrain_every_days)
        out = {"uri": f"runs:/{newest[0]}/{ARTIFACT}", "data_end": newest[1].isoformat(),
               "reused": True}
    else:
        from models.sequence import NotEnoughSequences

        try:
            out = _pretrain(settings, end, run_id)
        except NotEnoughSequences:
            if settings.encoder_features and not any(
                    family_class(f).needs_pretrained for f in settings.model_families):
                log.warning("no user has two clicks or more up to %s: no encoder to pre-train, "
                            "so no embedding features for this split (more history before the "
                            "training window, i.e. a later as_of date, gives one)", end)
                return None
            raise NotEnoughSequences(
                f"no user has two clicks or more up to {end}, the day before the first training "
                f"date: nothing to pre-train the encoder of {settings.models} on; train as of a "
                "later date (more history before the window) or lower RANKLINE_TRAIN_DAYS") from None
    out["embedded"] = embed_since(settings, end) if settings.encoder_features else {}
    return out


def embed_since(settings: Settings, start: dt.date) -> dict[str, str]:
    """:func:`embed_dates` for every date with features from ``start`` on (the split's rows
    and the refresh's candidates join them), then the newest date's views published online
    again when they changed, so online readers get the encoder's vectors too."""
    from feature_store.offline import feature_dates

    dates = [d for d in feature_dates(settings.offline_dir) if d >= start]
    written = embed_dates(settings, dates)
    if dates and dates[-1].isoformat() in written:
        from feature_store.online import materialize_online
        from serving.backends import opened

        with opened(settings, settings.online_store_path) as store:
            materialize_online(store, settings.offline_dir, dates[-1], keep=settings.keep_versions)
    return written


def embed_dates(settings: Settings, dates: list[dt.date]) -> dict[str, str]:
    """Write the embedding views of each date with the newest logged encoder whose data ends by
    that date (no encoder yet: nothing written, ``od_encoder_score`` stays NaN). A partition
    already computed by that encoder is kept. Returns ``{date: encoder run}`` of those written."""
    import tempfile

    from feature_store.definitions import ENCODER_USER
    from feature_store.embeddings import (
        ENCODER_COLUMN,
        embedding_frame,
        read_embeddings,
        write_embeddings,
    )
    from feature_store.sequences import read_sequences
    from models.sequence import EncoderCheckpoint

    encoders = logged_encoders(settings)
    loaded: dict[str, EncoderCheckpoint] = {}
    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        for date in dates:
            chosen = _newest(encoders, date)
            if chosen is None:
                log.info("no encoder with data up to %s yet: no embedding features as of it",
                         date)
                continue
            run = chosen[0]
            current = read_embeddings(settings.offline_dir, date)
            if current is not None and set(current[ENCODER_USER][ENCODER_COLUMN]) == {run}:
                continue
            seqs = read_sequences(settings.offline_dir, date)
            if seqs is None:  # never ingested: whoever reads its features says what to do
                log.warning("no user_sequence view as of %s: no embedding features as of it "
                            "(`rankline run-dag ingest --date %s` builds both)", date, date)
                continue
            if run not in loaded:
                path = encoder_path({"uri": f"runs:/{run}/{ARTIFACT}"}, Path(tmp) / run)
                loaded[run] = EncoderCheckpoint.load(path)
            ck = loaded[run]
            states = ck.user_states(list(seqs["seq"]), device=settings.device)
            item_ids, item_vecs = ck.item_embeddings()
            write_embeddings(settings.offline_dir, date,
                             embedding_frame("user_id", seqs["user_id"].to_numpy(), states, run),
                             embedding_frame("item_id", item_ids, item_vecs, run))
            written[date.isoformat()] = run
            log.info("embedding features as of %s: %d users, %d items (encoder %s, data up to "
                     "%s)", date, len(seqs), len(item_ids), run, chosen[1])
    return written


def _pretrain(settings: Settings, end: dt.date, run_id: str) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from feature_store.sequences import read_sequences
    from models.sequence import EncoderConfig, pretrain
    from pipeline.tracking import configure, log_figure

    configure(settings)
    seqs = read_sequences(settings.offline_dir, end)
    if seqs is None:
        raise FileNotFoundError(f"no user_sequence view as of {end}: rerun the ingest DAG for "
                                f"{end} (it builds the view) before training")
    if settings.n_threads:
        import torch

        torch.set_num_threads(settings.n_threads)
    ck = pretrain(list(seqs["seq"]), EncoderConfig(dim=settings.embed_dim,
                                                   max_len=settings.seq_len),
                  epochs=settings.pretrain_epochs, seed=settings.seed, device=settings.device)
    info = ck.info
    with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({"encoder.dim": ck.config.dim, "encoder.layers": ck.config.layers,
                           "encoder.heads": ck.config.heads, "encoder.max_len": ck.config.max_len,
                           "encoder.negatives": info["negatives"],
                           "encoder.data_end": end.isoformat()})
        for name, curve in info["curves"].items():
            for step, value in enumerate(curve):
                mlflow.log_metric(name.replace("@", "_at_"), value, step=step)
        mlflow.log_metrics({"pretrain_samples_per_s": info["samples_per_s"],
                            "pretrain_seconds": info["seconds"],
                            "pretrain_best_epoch": info["best_epoch"],
                            "pretrain_users": info["users"], "pretrain_items": info["items"]})
        path = ck.save(Path(tmp) / "encoder.pt")
        mlflow.log_artifact(str(path), "encoder")
        from feature_store.embeddings import embedding_frame

        table = embedding_frame("item_id", *ck.item_embeddings(), run_id)
        table.to_parquet(Path(tmp) / "item_embeddings.parquet")
        mlflow.log_artifact(str(Path(tmp) / "item_embeddings.parquet"), "encoder")
        fig, ax = plt.subplots(1, 3, figsize=(14, 4))
        ax[0].plot(info["curves"]["pretrain_loss"])
        ax[0].set(xlabel="epoch", title="Pre-training loss (next-item cross-entropy)")
        ax[1].plot(info["curves"]["pretrain_valid_loss"])
        ax[1].set(xlabel="epoch", title="Held-out users' next item: cross-entropy")
        ax[2].plot(info["curves"]["pretrain_valid_hr@10"])
        ax[2].set(xlabel="epoch", title="Held-out users' next item: HR@10")
        for a in ax[1:]:
            a.axvline(info["best_epoch"], color="grey", ls="--", lw=1)
        fig.tight_layout()
        log_figure(fig, "plots/pretraining.png")
        mlflow.set_tag(DATA_END_TAG, end.isoformat())
    log.info("pre-trained an encoder on %d users' sequences up to %s: %.0f samples/s",
             info["users"], end, info["samples_per_s"])
    return {"uri": f"runs:/{run_id}/{ARTIFACT}", "data_end": end.isoformat(), "reused": False}


def encoder_path(encoder: dict[str, Any] | None, dst: Path) -> Path | None:
    """A local copy of the encoder of :func:`pretrain_encoder` (None stays None)."""
    if not encoder:
        return None
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(encoder["uri"], dst_path=str(dst)))
