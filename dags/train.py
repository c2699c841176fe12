"""Train DAG: training set → train → evaluate and promote, triggered by new features."""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from pipeline.dag_support import (
    MODEL,
    as_of_param,
    dag_kwargs,
    fail_fast,
    settings,
    training_split_tasks,
)


@dag(
    dag_id="train",
    # Daily after ingest's midnight run, not on the rankline_features asset: one training a
    # day however many dates ingest caught up. catchup=False (dag_kwargs): no missed day reruns.
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
    params=as_of_param("Last date of the split (default: newest validated features)"),
    **dag_kwargs("train"),
)
def train() -> None:
    """### Train: training set → train → evaluate and promote

    Runs **daily at 02:00 UTC**, after `ingest`'s midnight run, as of the newest date with
    validated features (or by hand, with `as_of`). One training a day, however many dates
    `ingest` caught up or backfilled since: it is not scheduled on the `rankline_features`
    asset, which fired one training per ingested date. With `catchup=False`, unpausing it
    runs the latest 02:00 at once, never the older missed ones; with no features at all the
    run fails at once saying so.

    For the date D it works on: labels from the funnel (purchase 3 > add-to-cart 2 > click 1 >
    ignored 0) plus negatives sampled from the match set, joined with features as of the day
    before each row's date (point-in-time); a time-based split (train, validation for early
    stopping, the last dates held out for test).

    `split` checks the dates the split needs. `pretrain` gives the split its sequence encoder:
    the newest one logged, or a new one pre-trained on users' click sequences up to the day
    before the first training date (next-item objective) when that is
    `RANKLINE_PRETRAIN_EVERY_DAYS` old; it writes the encoder's embedding feature views for the
    split's dates (`od_encoder_score`, every family's feature), and the `neural` family starts
    from it. `training_set` then writes the labelled rows.
    `train_model` runs once per model family of `RANKLINE_MODELS` (dynamic task mapping: one
    task instance per family, named after it). `evaluate` scores every family on the held-out
    dates beside the popularity and random baselines, the current champion and the oracle
    (NDCG@10, MAP@10, recall@20), and everything goes to one MLflow run: each family's params
    and curves, feature importance, the models with their signatures, the evaluation table.
    **A family becomes the champion (MLflow alias) only if it beats the best baseline and the
    champion on evidence (a paired bootstrap interval over held-out groups above zero); of those
    that do, the best.** Only then does `announce_champion` update the `rankline_model` asset,
    which triggers `hulk_refresh`; otherwise it is skipped and nothing is republished.
    """

    @task
    def families() -> list[str]:
        return settings().model_families  # RANKLINE_MODELS

    @task(map_index_template="{{ family }}")
    def train_model(assembled: dict, encoder: dict | None, family: str) -> dict:
        from pipeline.training import train_model as fit

        get_current_context()["family"] = family  # names the mapped instance in the UI
        return fit(settings(), assembled["split"], assembled["mlflow_run_id"], family, encoder)

    @task
    def evaluate(assembled: dict, trained: list[dict]) -> dict:
        from pipeline.training import evaluate as run_evaluation

        with fail_fast():
            result = run_evaluation(settings(), assembled["split"], assembled["mlflow_run_id"],
                                    list(trained))
        return {**result, "as_of": assembled["as_of"]}

    @task.short_circuit
    def promoted(result: dict) -> bool:
        return bool(result["promoted"])  # False: the rest is skipped, no refresh is triggered

    @task(outlets=[MODEL])
    def announce_champion(result: dict, **context) -> dict:
        context["outlet_events"][MODEL].extra = {
            "as_of": result["as_of"], "model_version": result["model_version"],
            "family": result["family"], "promoted": True}
        return {"model_uri": result["model_uri"], "model_version": result["model_version"],
                "family": result["family"]}

    _, encoder, assembled = training_split_tasks()
    trained = train_model.partial(assembled=assembled, encoder=encoder).expand(family=families())
    result = evaluate(assembled, trained)
    promoted(result) >> announce_champion(result)

train_dag = train()
