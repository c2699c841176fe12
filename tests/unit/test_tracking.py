import pytest


def test_no_champion_is_a_clear_lookup_error(settings):
    from pipeline import steps

    with pytest.raises(LookupError, match="run the train DAG first"):
        steps.champion_uri(settings)


def test_one_mlflow_run_per_dag_run(settings):
    from pipeline.tracking import dag_run

    a = dag_run(settings, "train", "manual__1", "2026-01-14")
    assert dag_run(settings, "train", "manual__1", "2026-01-14") == a  # a task rerun finds it
    assert dag_run(settings, "train", "manual__2", "2026-01-14") != a


def test_the_experiment_opens_on_its_runs_in_mlflow_ui(settings):
    import mlflow

    from pipeline.tracking import EXPERIMENT_KIND, configure

    exp_id = configure(settings)
    client = mlflow.MlflowClient()
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND[0]] == "custom_model_development"
    client.delete_experiment_tag(exp_id, EXPERIMENT_KIND[0])  # an experiment made before it
    assert configure(settings) == exp_id
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND[0]] == "custom_model_development"


def test_rollback_switches_and_is_logged_to_mlflow(settings):
    import mlflow

    from pipeline import steps
    from serving.backends import opened

    with opened(settings) as store:
        for model in ("models:/m/1", "models:/m/2"):
            store.publish("recs", [("u1", model.encode())], meta={"model_uri": model})
    out = steps.rollback(settings, why="bad model", by="alice")
    assert (out["rollback.from_version"], out["rollback.to_version"]) == (2, 1)
    with opened(settings) as store:
        assert store.get("recs", "u1")[0] == b"models:/m/1"
    run = mlflow.MlflowClient().get_run(out["mlflow_run_id"])
    assert run.info.run_name == "rollback/recs/2->1"
    assert {k: run.data.tags[f"rollback.{k}"] for k in ("who", "why", "from_version", "model")} == {
        "who": "alice", "why": "bad model", "from_version": "2", "model": "models:/m/1"}
    assert run.data.tags["rollback.at"]


def test_a_moved_home_is_named_and_relocate_makes_its_artifacts_readable(settings, tmp_path,
                                                                          monkeypatch):
    import shutil

    import mlflow

    from pipeline.relocate import HomeMoved, relocate
    from pipeline.settings import get_settings
    from pipeline.tracking import configure, dag_run

    run_id = dag_run(settings, "ingest", "manual__1", "2026-01-01")
    docs = settings.home / "validation" / "index.html"
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.set_tag("data_docs", str(docs))
    moved = tmp_path / "elsewhere" / "var"
    moved.parent.mkdir()
    shutil.move(settings.home, moved)
    monkeypatch.setenv("RANKLINE_HOME", str(moved))
    get_settings.cache_clear()
    s = get_settings()
    with pytest.raises(HomeMoved, match="rankline relocate"):
        configure(s)
    changed = relocate(s.home, s.tracking_uri)
    assert changed["runs.artifact_uri"] >= 1 and changed["experiments.artifact_location"] == 1
    assert changed["tags.value"] >= 1
    configure(s)  # no longer refuses
    run = mlflow.get_run(run_id)
    assert run.info.artifact_uri.startswith(moved.as_uri() + "/")
    assert run.data.tags["data_docs"] == str(moved / "validation" / "index.html")
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes/hello.txt",
                                               dst_path=str(tmp_path / "dl"))
    assert open(path).read() == "hello"
    assert relocate(s.home, s.tracking_uri) == {}  # a second run changes nothing


def _configure_in_a_process(home: str) -> str:
    from pipeline.settings import Settings
    from pipeline.tracking import configure

    return configure(Settings(home=home))


def test_processes_opening_a_new_sqlite_store_at_once_all_get_the_one_experiment(tmp_path):
    """The first tasks of a backfill open a new MLflow database together: without the lock,
    MLflow's table creation ran twice at once and left the store broken."""
    import multiprocessing

    home = str(tmp_path / "var")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        ids = pool.map(_configure_in_a_process, [home] * 3)
    assert len(set(ids)) == 1
    assert (tmp_path / "var" / "mlflow.db.lock").exists()
