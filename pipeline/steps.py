"""Each DAG task's work as a plain function of (settings, date, MLflow run): DAGs, the CLI and
the tests call these. Inputs and outputs are small JSON-able values (paths, ids, versions).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)


class NoChampion(LookupError):
    """No model holds the champion alias yet (a retry cannot help; train first)."""


def acquire(settings: Settings, date: dt.date) -> dict[str, str]:
    """Write ``date``'s tables from the configured source into staging; return their paths.
    ``raw/`` is untouched until the staged copy passes validation (:func:`validate`)."""
    from pipeline.landing import stage

    return stage(settings, date)


def validate(settings: Settings, date: dt.date) -> dict[str, Any]:
    """Validate the staged copy of ``date`` and promote it into ``raw/``; raises
    ``ValidationFailed`` (after quarantining it, ``raw/`` unchanged)."""
    from pipeline.landing import land

    report = land(settings, date)
    return {"date": date.isoformat(), "rows": report.rows, "data_docs": report.data_docs}


def features(settings: Settings, date: dt.date, run_id: str | None = None,
             report: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the offline features as of ``date`` and materialize them online."""
    from feature_store.offline import build_features
    from feature_store.online import materialize_online
    from pipeline.landing import is_valid, require_valid
    from serving.backends import opened

    require_valid(settings, [date], f"features as of {date}")
    paths = build_features(settings.raw_dir, settings.offline_dir, date,
                           usable=lambda d: is_valid(settings, d))
    if settings.encoder_features:
        from pipeline.pretraining import embed_dates

        embed_dates(settings, [date])  # with the newest encoder trained on data up to date
    with opened(settings, settings.online_store_path) as store:
        online = materialize_online(store, settings.offline_dir, date, keep=settings.keep_versions)
    out = {"date": date.isoformat(), "offline": paths, "online_version": online["version"],
           "online_keys": online["keys"]}
    if run_id:
        import mlflow

        from pipeline.tracking import configure

        configure(settings)
        with mlflow.start_run(run_id=run_id):
            for table, n in (report or {}).get("rows", {}).items():
                mlflow.log_metric(f"rows_{table}", n)
            mlflow.log_params({"date": date.isoformat(), "source": settings.source})
            mlflow.log_metric("online_keys", online["keys"])
            if report and report.get("data_docs"):
                mlflow.set_tag("data_docs", report["data_docs"])
    return out


def champion_uri(settings: Settings) -> dict[str, str]:
    """The champion model's URI and version; a clear error when there is none yet."""
    from pipeline.tracking import champion_version

    champ = champion_version(settings)
    if champ is None:
        raise NoChampion("no champion model in MLflow yet: run the train DAG first (a model is "
                         "promoted only when it beats the baselines on evidence); to serve a "
                         "refused model anyway: rankline model list, then rankline model "
                         "promote VERSION --reason '...'")
    return {"model_uri": f"models:/{champ.name}/{champ.version}", "model_version": champ.version,
            "model_run_id": champ.run_id}


def refresh(settings: Settings, as_of: dt.date, champion: dict[str, str],
            run_id: str | None = None) -> dict[str, Any]:
    """Publish every active user's top-k from the champion; log the summary to MLflow."""
    from pipeline.hulk import refresh as hulk_refresh

    if settings.encoder_features:  # the champion was trained with od_encoder_score
        from pipeline.pretraining import embed_dates

        embed_dates(settings, [as_of])  # kept as it is when already computed
    meta = {"model_version": str(champion["model_version"])}
    summary = hulk_refresh(settings, as_of, champion["model_uri"], meta)
    if run_id:
        import mlflow

        from pipeline.tracking import configure

        configure(settings)
        with mlflow.start_run(run_id=run_id):
            mlflow.log_params({"as_of": as_of.isoformat(), "model_uri": champion["model_uri"],
                               "top_k": settings.top_k, "consumed": settings.consumed,
                               "history_days": settings.history_days,
                               "threads": settings.n_threads, "blend": settings.blend,
                               "pools": ",".join(f"{p}:{n}" for p, n in
                                                 settings.pool_sizes.items())})
            for pool, share in summary.get("pool_share", {}).items():
                mlflow.log_metric(f"pool_share_{pool}", share)
            for key in ("store_version", "users", "users_inactive_7d", "consumed_pairs", "keys",
                        "rows_scored", "score_rows_per_s", "publish_keys_per_s", "seconds"):
                mlflow.log_metric(key, summary[key])
    return summary


def verify_published(settings: Settings, version: int) -> dict[str, Any]:
    """Check the store serves ``version`` and its cold-start list decodes and is not empty."""
    from serving.backends import open_store
    from serving.client import COLD_START, NAMESPACE
    from serving.codec import decode_recs

    store = open_store(settings, create=False)
    try:
        cur = store.current(NAMESPACE)
        if cur is None or cur.version != version:
            raise RuntimeError(f"store serves version {cur and cur.version}, expected {version}")
        values, info = store.get_many(NAMESPACE, [COLD_START])
        ids, _ = decode_recs(values[0])
        if len(ids) == 0:
            raise RuntimeError("cold-start list is empty")
        return {"version": info.version, "n_keys": info.n_keys, "cold_start_items": len(ids)}
    finally:
        store.close()


def rollback(settings: Settings, to: int | None = None, why: str = "", by: str | None = None,
             run_id: str | None = None, namespace: str = "recs") -> dict[str, Any]:
    """Serve an older kept version again (one atomic switch), then log who, when and why to
    MLflow: into ``run_id`` (the DAG run's run) or a new run named ``rollback/<ns>/<from>-><to>``."""
    import mlflow

    from pipeline import tracking
    from serving.backends import opened
    from serving.store import who

    by = by or who()
    with opened(settings, create=False) as store:
        info = store.rollback(namespace, to, why, by)
        event = next(e for e in store.events(namespace) if e["action"] == "rollback" and
                     e["to"] == info.version and e["who"] == by)
    prev = event["from"]
    record = {"rollback.namespace": namespace, "rollback.from_version": prev,
              "rollback.to_version": info.version, "rollback.who": by, "rollback.why": why,
              "rollback.at": event["at"], "rollback.model": info.meta.get("model_uri", "")}
    exp_id = tracking.configure(settings)
    client = mlflow.MlflowClient()
    if run_id is None:
        run_id = client.create_run(exp_id, run_name=f"rollback/{namespace}/{prev}->{info.version}",
                                   tags={"rankline.action": "rollback"}).info.run_id
    for key, value in record.items():
        client.set_tag(run_id, key, str(value))
    client.set_terminated(run_id)  # the DAG run's run too: a rollback is its last step
    log.warning("%s rolled back from version %s to %s by %s: %s", namespace, prev, info.version,
                by, why)
    return {**record, "mlflow_run_id": run_id}
