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
