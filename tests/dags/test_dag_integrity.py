"""Every DAG parses without errors, without heavy imports, connections or database queries,
and follows the project's policy (tags, retries with backoff, a docstring shown in the UI)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
HEAVY = ["pandas", "numpy", "pyarrow", "torch", "xgboost", "mlflow", "great_expectations",
         "sklearn", "optuna", "dask", "redis", "matplotlib", "fastapi"]

PROBE = r"""
import importlib.util, json, socket, sqlite3, sys, time
def refuse(*a, **k):
    raise AssertionError("DAG parsing opened a connection")
socket.socket.connect = refuse
sqlite3.connect = refuse
path = sys.argv[1]
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("probe_dag", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
elapsed = time.perf_counter() - t
from airflow.sdk import DAG
dags = [o for o in vars(mod).values() if isinstance(o, DAG)]
out = {"elapsed": elapsed, "heavy": sorted(m for m in HEAVY if m in sys.modules), "dags": []}
for d in dags:
    out["dags"].append({
        "dag_id": d.dag_id, "tags": sorted(d.tags), "doc_md": d.doc_md or "",
        "tasks": {t.task_id: {"retries": t.retries,
                              "backoff": bool(t.retry_exponential_backoff)} for t in d.tasks},
    })
print(json.dumps(out))
"""


def _parse(path: Path, tmp_path: Path) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/never-created.db",
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    code = f"HEAVY = {HEAVY!r}\n" + PROBE
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, f"{path.name} failed to parse:\n{res.stderr[-3000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def parse_dir(tmp_path_factory) -> Path:
    """The folder the parses' AIRFLOW_HOME and (never-created) database point into."""
    return tmp_path_factory.mktemp("parse")


@pytest.fixture(scope="module")
def parsed(parse_dir) -> dict[str, dict]:
    return {p.name: _parse(p, parse_dir) for p in sorted(DAGS.glob("*.py"))}


def test_the_four_dags_exist(parsed):
    ids = {d["dag_id"] for info in parsed.values() for d in info["dags"]}
    assert {"ingest", "train", "hulk_refresh", "sweep"} <= ids


def test_the_sweep_maps_its_trials_a_few_at_a_time(load):
    sweep = load(RANKLINE_SWEEP_PARALLEL="3")["sweep"]
    trial = sweep.get_task("trial")
    assert type(trial).__name__.endswith("MappedOperator")  # one task instance per trial
    assert trial.max_active_tis_per_dagrun == 3
    assert sweep.get_task("finish").trigger_rule == "all_done"  # the completed trials count


def test_no_heavy_imports_no_connections_at_parse(parsed, parse_dir):
    for name, info in parsed.items():
        assert info["heavy"] == [], f"{name} imports {info['heavy']} at parse time"
    assert parse_dir.is_dir() and not (parse_dir / "never-created.db").exists()


def test_policy_tags_retries_docs(parsed):
    for name, info in parsed.items():
        for dag in info["dags"]:
            assert "rankline" in dag["tags"], name
            assert dag["doc_md"].lstrip().startswith("###"), f"{dag['dag_id']} needs a UI page"
            for task_id, t in dag["tasks"].items():
                assert t["retries"] >= 1 and t["backoff"], f"{dag['dag_id']}.{task_id}"


def test_dag_files_only_wire():
    """DAG files hold no business logic: no pandas/numpy code, each task body is short."""
    import ast

    for path in DAGS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(
                    getattr(getattr(d, "func", d), "id", "") == "task" for d in node.decorator_list):
                body = [n for n in node.body if not isinstance(n, ast.Expr)]
                assert len(body) <= 8, f"{path.name}:{node.name} does too much for a DAG file"


# --- run conf: unknown keys and keys that need another are errors, in the first task ---------

@pytest.fixture(scope="module")
def support(tmp_path_factory):
    """``pipeline.dag_support`` imported with Airflow's home in a temporary folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
        from airflow.sdk.exceptions import AirflowFailException

        from pipeline import dag_support
        yield dag_support, AirflowFailException


REFRESH_PARAMS = {"as_of": None, "rollback": False, "rollback_to": None, "reason": None}
REQUIRES = {"rollback_to": "rollback", "reason": "rollback"}


def _context(conf: dict, declared: dict = REFRESH_PARAMS) -> dict:
    from types import SimpleNamespace

    get = getattr(declared, "get_param", None)  # a real ParamsDict holds Param objects
    params = {k: get(k).value if get else declared[k] for k in declared}
    return {"dag": SimpleNamespace(dag_id="hulk_refresh", params=declared),
            "dag_run": SimpleNamespace(conf=conf), "params": {**params, **conf}}


@pytest.mark.parametrize("conf, needle", [
    ({"rollback_to": 999}, "rollback_to=999 only makes sense with rollback: true"),
    ({"reason": "bad model"}, "reason='bad model' only makes sense with rollback: true"),
    ({"rollback": False, "rollback_to": 2, "reason": ""}, "rollback_to=2 only makes sense"),
    ({"rolback": True}, "unknown conf key(s) ['rolback']; hulk_refresh takes ['as_of', 'reason', "
                        "'rollback', 'rollback_to']"),
])
def test_check_conf_rejects(support, conf, needle, reliability):
    dag_support, fail = support
    with pytest.raises(fail) as err:
        dag_support.check_conf(_context(conf), requires=REQUIRES)
    reliability("bad params", f"hulk_refresh {conf}", "first task fails, nothing published",
                str(err.value))
    assert needle in str(err.value)


@pytest.mark.parametrize("conf", [
    {},
    {"rollback": True, "rollback_to": 2, "reason": "bad model"},
    {"rollback": True},
    {"as_of": "2026-01-14"},
    REFRESH_PARAMS,  # what the UI sends: every param with its default
    {**REFRESH_PARAMS, "reason": ""},  # an emptied text field (the API may send "")
])
def test_check_conf_accepts(support, conf):
    dag_support, _ = support
    dag_support.check_conf(_context(conf), requires=REQUIRES)


def test_check_conf_on_a_dag_without_params(support):
    dag_support, fail = support
    with pytest.raises(fail, match=r"unknown conf key\(s\) \['as_of'\]; hulk_refresh takes no params"):
        dag_support.check_conf(_context({"as_of": "2026-01-01"}, declared={}))


def test_check_conf_reads_real_airflow_params(support):
    """Against the ``ParamsDict`` of the real refresh DAG (Param objects, not plain values)."""
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamsDict

    dag_support, fail = support
    declared = ParamsDict({"rollback": Param(False, type=["null", "boolean"]),
                           "rollback_to": Param(None, type=["null", "integer"]),
                           "reason": Param(None, type=["null", "string"])})
    dag_support.check_conf(_context({"rollback": False, "rollback_to": None}, declared), REQUIRES)
    with pytest.raises(fail, match="rollback_to=3 only makes sense"):
        dag_support.check_conf(_context({"rollback_to": 3}, declared), requires=REQUIRES)


def test_bad_settings_fail_the_task_without_retries(support, monkeypatch):
    from pipeline.settings import get_settings

    dag_support, fail = support
    monkeypatch.setenv("RANKLINE_TOP_K", "-1")
    get_settings.cache_clear()
    try:
        with pytest.raises(fail, match=r"RANKLINE_TOP_K=-1: must be an integer >= 1 and <= 1000"):
            dag_support.settings()
    finally:
        get_settings.cache_clear()


# --- scheduling: bounded catch-up, one training a day, nothing floods at unpause -----------

@pytest.fixture
def load(support, monkeypatch):
    """Parse every DAG in-process under ``RANKLINE_*`` variables given as keywords."""
    from pipeline.airflow_env import load_dags

    def parse(**env: str) -> dict:
        for key in ("RANKLINE_START_DATE", "RANKLINE_CATCHUP_DAYS"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return load_dags()

    return parse


def _due(dag, last: tuple[dt.date, dt.date] | None = None, days_ahead: int = 0) -> list:
    """The runs the scheduler creates for ``dag`` from now on, up to ``days_ahead`` days from
    now: its own logic (the serialized DAG's timetable and time restriction), after a last
    automated run over ``last`` (start, end) or none."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import DagRunInfo

    ser = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=days_ahead)
    info = DagRunInfo.interval(*(_midnight(d) for d in last)) if last else None
    runs = []
    while (info := ser.next_dagrun_info(last_automated_run_info=info)) and info.run_after <= until:
        runs.append(info)
        assert len(runs) < 400, f"{dag.dag_id} floods"
    return runs


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


@pytest.mark.parametrize("first, days, today, start", [
    (dt.date(2026, 1, 1), 3, dt.date(2026, 12, 2), dt.date(2026, 11, 29)),
    (dt.date(2026, 1, 1), 0, dt.date(2026, 12, 2), dt.date(2026, 12, 2)),
    (dt.date(2026, 11, 30), 3, dt.date(2026, 12, 2), dt.date(2026, 11, 30)),  # never before it
    (dt.date(2027, 1, 1), 3, dt.date(2026, 12, 2), dt.date(2027, 1, 1)),
])
def test_catchup_start(support, first, days, today, start):
    dag_support, _ = support
    assert dag_support.catchup_start(_midnight(first), days, today) == _midnight(start)


def test_ingest_catches_up_only_the_last_days(load):
    today = dt.datetime.now(dt.UTC).date()
    ingest = load(RANKLINE_START_DATE="2020-01-01", RANKLINE_CATCHUP_DAYS="3")["ingest"]
    assert ingest.catchup and ingest.start_date == _midnight(today - dt.timedelta(days=3))
    assert all(t.start_date == ingest.start_date for t in ingest.tasks)
    want = [_midnight(today - dt.timedelta(days=n)) for n in (3, 2, 1)]
    assert [r.logical_date for r in _due(ingest)] == want  # unpaused for the first time
    month_ago = today - dt.timedelta(days=30)  # the scheduler was down for a month
    assert [r.logical_date for r in _due(ingest, (month_ago, month_ago + dt.timedelta(days=1)))
            ] == want
    assert _due(load(RANKLINE_START_DATE="2020-01-01", RANKLINE_CATCHUP_DAYS="0")["ingest"]) == []
    assert len(_due(load()["ingest"])) <= 3  # the defaults


def test_backfill_still_reaches_any_older_date(load):
    """``airflow backfill create`` lists its runs with this call, from ``--from-date`` on,
    whatever the start date (and Airflow gives backfill runs every task instance)."""
    from airflow.serialization.serialized_objects import DagSerialization

    ingest = load(RANKLINE_START_DATE="2026-01-01", RANKLINE_CATCHUP_DAYS="0")["ingest"]
    ser = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(ingest))
    infos = list(ser.iter_dagrun_infos_between(_midnight(dt.date(2026, 1, 15)),
                                               _midnight(dt.date(2026, 1, 20))))
    assert [i.logical_date.date().day for i in infos] == [15, 16, 17, 18, 19, 20]


def test_run_dag_reaches_dates_before_the_start_date(load):
    """``dag.test()`` makes manual runs, which get no task instance before a task's start
    date: ``reach`` lowers the start date of that parsed copy (``rankline demo``, run-dag)."""
    from pipeline.airflow_env import reach

    ingest = load(RANKLINE_CATCHUP_DAYS="3")["ingest"]
    bound = ingest.start_date
    reach(ingest, bound + dt.timedelta(days=1))
    assert ingest.start_date == bound
    old = _midnight(dt.date(2025, 12, 31))
    reach(ingest, old)
    assert ingest.start_date == old and {t.start_date for t in ingest.tasks} == {old}


@pytest.mark.parametrize("value", ["-1", "3661", "three", ""])
def test_a_bad_catchup_days_fails_the_parse_like_the_setting(support, monkeypatch, value):
    from pipeline.settings import Settings

    dag_support, _ = support
    monkeypatch.setenv("RANKLINE_CATCHUP_DAYS", value)
    with pytest.raises(ValueError, match=f"RANKLINE_CATCHUP_DAYS={value}: must be an integer "
                                         ">= 0 and <= 3660"):
        dag_support.catchup_days()
    assert Settings.model_fields["catchup_days"].default == dag_support.CATCHUP_DAYS


def test_train_runs_once_a_day_not_once_per_features_event(load):
    from airflow.sdk import CronTriggerTimetable

    train = load(RANKLINE_START_DATE="2020-01-01")["train"]
    assert isinstance(train.timetable, CronTriggerTimetable)  # no asset in its schedule
    assert not train.catchup
    assert len(_due(train)) == 1  # unpaused: the latest 02:00 once, not one per missed day
    assert len(_due(train, days_ahead=10)) == 11  # then one a day


def test_the_refresh_fires_at_most_once_at_unpause(load):
    refresh = load(RANKLINE_START_DATE="2020-01-01")["hulk_refresh"]
    assert not refresh.catchup
    assert len(_due(refresh)) == 1
    week_ago = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=7)  # after an outage too
    assert len(_due(refresh, (week_ago, week_ago))) == 1


def test_every_param_is_optional_in_the_trigger_form(load):
    """Airflow 3's trigger form requires a field whose schema type lacks "null" (and blocks
    the button while it is empty); each param must also accept "no value"."""
    for dag in load().values():
        assert dag.params.validate() is not None  # the defaults, as a scheduled run uses them
        for name in dag.params:
            param = dag.params.get_param(name)
            assert "null" in param.schema["type"], f"{dag.dag_id}.{name} is required in the form"
            param.resolve(None)  # a field left empty validates
    assert set(load()["hulk_refresh"].params) == {"as_of", "rollback", "rollback_to", "reason"}


def test_pick_as_of(support):
    dag_support, _ = support

    def newest() -> dt.date:
        return dt.date(2026, 3, 1)

    def unused() -> dt.date:
        raise AssertionError("the features were read though the date was given")

    assert dag_support.pick_as_of("2026-01-14", ["2026-02-01"], unused) == dt.date(2026, 1, 14)
    assert dag_support.pick_as_of(None, ["2026-02-01", None, "2026-02-03"], unused) == \
        dt.date(2026, 2, 3)
    assert dag_support.pick_as_of(None, [], newest) == dt.date(2026, 3, 1)
    assert dag_support.pick_as_of("", [], newest) == dt.date(2026, 3, 1)


def _scheduled_refresh(logical: dt.datetime) -> dict:
    from types import SimpleNamespace

    return {"params": dict(REFRESH_PARAMS), "triggering_asset_events": {},
            "logical_date": logical, "dag": SimpleNamespace(dag_id="hulk_refresh"),
            "dag_run": SimpleNamespace(run_type="scheduled", conf={})}


def test_a_scheduled_refresh_uses_the_newest_validated_features(support, settings, ingested):
    """The run Airflow fires at unpause for the latest 03:00 asks for no particular date: it
    gets the newest date with features and validated data, not one derived from its logical
    date (which had no features and failed three times)."""
    from pipeline.landing import SUCCESS, report_dir

    dag_support, _ = support
    for day in ingested[:2]:  # the last date's features exist, its validation marker not
        report_dir(settings, day).mkdir(parents=True, exist_ok=True)
        (report_dir(settings, day) / SUCCESS).touch()
    assert dag_support.newest_features_date(settings) == ingested[1]
    logical = _midnight(ingested[-1] + dt.timedelta(days=40)) + dt.timedelta(hours=3)
    assert dag_support.as_of_date(_scheduled_refresh(logical)) == ingested[1]


def test_a_refresh_without_any_features_fails_at_once(support, settings):
    dag_support, fail = support
    with pytest.raises(fail, match="no validated features under .*: run the ingest DAG first"):
        dag_support.as_of_date(_scheduled_refresh(_midnight(dt.date(2026, 6, 1))))


def test_the_embedded_executor_forks_few_workers(settings, monkeypatch):
    from pipeline import airflow_env

    cores = len(os.sched_getaffinity(0))
    slots = int(airflow_env.airflow_env(settings)["AIRFLOW__CORE__PARALLELISM"])
    assert slots == min(airflow_env.MAX_PARALLELISM, cores) and 1 <= slots <= cores
    for key in airflow_env.airflow_env(settings):  # restored after the test
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "7")
    airflow_env.configure(settings)
    assert os.environ["AIRFLOW__CORE__PARALLELISM"] == "7"  # a value already set wins


@pytest.mark.integration
def test_refresh_with_rollback_to_but_no_rollback_fails_first_and_publishes_nothing(tmp_path):
    """A real ``dag.test()`` run (~12 s): ``mode`` fails at once, nothing downstream runs."""
    import sqlite3

    from tests.conftest import TINY

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RANKLINE_"))}
    env.update(TINY, RANKLINE_HOME=str(tmp_path / "var"))
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "run-dag", "hulk_refresh",
                          "--conf", '{"rollback_to": 999}'], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode != 0
    assert "rollback_to=999 only makes sense with rollback: true" in res.stdout + res.stderr
    db = sqlite3.connect(tmp_path / "var" / "airflow" / "airflow.db")
    states = dict(db.execute("SELECT task_id, state FROM task_instance"))
    db.close()
    assert states.pop("mode") == "failed"
    assert set(states.values()) == {"upstream_failed"}, states
    assert not (tmp_path / "var" / "serving.db").exists()


@pytest.mark.parametrize("to", [None, 7])
def test_a_rollback_with_no_version_to_go_back_to_fails_without_retries(to):
    """The rollback task runs under fail_fast: "not kept" is no error a retry could fix."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.dag_support import fail_fast
    from serving.store import rollback_target

    with pytest.raises(AirflowFailException, match="not kept|no kept version"), fail_fast():
        rollback_target(1, {1: "live"}, to, "recs")
