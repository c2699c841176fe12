"""Every DAG parses without errors, without heavy imports, connections or database queries,
and follows the project's policy (tags, retries with backoff, a docstring shown in the UI)."""

from __future__ import annotations

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


def test_the_three_dags_exist(parsed):
    ids = {d["dag_id"] for info in parsed.values() for d in info["dags"]}
    assert {"ingest", "train", "hulk_refresh"} <= ids


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


REFRESH_PARAMS = {"as_of": None, "rollback": False, "rollback_to": None, "reason": ""}
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
    declared = ParamsDict({"rollback": Param(False, type="boolean"),
                           "rollback_to": Param(None, type=["null", "integer"]),
                           "reason": Param("", type="string")})
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
