"""The pre-training step of the train DAG: a sequence encoder for the families that start from one.

The encoder learns from the ``user_sequence`` view as of the last validation date of the split
(clicks up to that date: the held-out test dates are never seen). A new one is trained only when
the newest logged encoder's data ends ``RANKLINE_PRETRAIN_EVERY_DAYS`` or more days before that
date (or there is none, or it would end after it: a backfill); otherwise the newest is reused.
Each encoder is logged to the train DAG run's MLflow run: ``encoder/encoder.pt`` (weights,
vocabulary, configuration), ``encoder/item_embeddings.parquet``, the loss and hit-rate curves,
samples per second, and the tag ``encoder_data_end``.
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


def needs_encoder(settings: Settings) -> bool:
    """Whether a family of ``RANKLINE_MODELS`` starts from a pre-trained encoder."""
    from models.registry import family_class

    return any(family_class(f).needs_pretrained for f in settings.model_families)


def newest_encoder(settings: Settings, end: dt.date) -> tuple[str, dt.date] | None:
    """``(run id, data end)`` of the newest logged encoder whose data ends by ``end``."""
    import mlflow

    from pipeline.tracking import configure

    runs = mlflow.search_runs([configure(settings)],
                              filter_string=f"tags.{DATA_END_TAG} != ''", output_format="list")
    found = [(r.info.run_id, dt.date.fromisoformat(r.data.tags[DATA_END_TAG])) for r in runs]
    found = [(run, d) for run, d in found if d <= end]
    return max(found, key=lambda x: x[1]) if found else None


def pretrain_encoder(settings: Settings, split: dict[str, list[str]],
                     run_id: str) -> dict[str, Any] | None:
    """The encoder the split's families start from: reused or newly pre-trained (see module).

    Returns ``{"uri", "data_end", "reused"}`` (``uri``: an MLflow artifact URI), or None when no
    family of ``RANKLINE_MODELS`` needs one.
    """
    if not needs_encoder(settings):
        log.info("no family of RANKLINE_MODELS=%s starts from an encoder: nothing to pre-train",
                 settings.models)
        return None
    end = dt.date.fromisoformat(split["valid"][-1])
    newest = newest_encoder(settings, end)
    if newest and (end - newest[1]).days < settings.pretrain_every_days:
        log.info("reusing the encoder of run %s (data up to %s; RANKLINE_PRETRAIN_EVERY_DAYS=%d)",
                 newest[0], newest[1], settings.pretrain_every_days)
        return {"uri": f"runs:/{newest[0]}/{ARTIFACT}", "data_end": newest[1].isoformat(),
                "reused": True}
    return _pretrain(settings, end, run_id)


def _pretrain(settings: Settings, end: dt.date, run_id: str) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import pandas as pd

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
        emb = ck.state["items.weight"][1:].numpy()
        table = pd.DataFrame(emb, columns=[f"e{i}" for i in range(emb.shape[1])])
        table.insert(0, "item_id", ck.item_ids)
        table.to_parquet(Path(tmp) / "item_embeddings.parquet")
        mlflow.log_artifact(str(Path(tmp) / "item_embeddings.parquet"), "encoder")
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        ax[0].plot(info["curves"]["pretrain_loss"])
        ax[0].set(xlabel="epoch", title="Pre-training loss (sampled softmax)")
        ax[1].plot(info["curves"]["pretrain_valid_hr@10"])
        ax[1].axvline(info["best_epoch"], color="grey", ls="--", lw=1)
        ax[1].set(xlabel="epoch", title="Held-out users' next item: HR@10")
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
