"""Expected answers of the CLI read as answers: one line that says what to do, exit 1, never a
traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from serving.sqlite_store import SQLiteStore


def test_a_rollback_with_one_version_says_there_is_nothing_to_roll_back_to(tmp_path):
    home = tmp_path / "var"
    home.mkdir()
    store = SQLiteStore(home / "serving.db")
    store.publish("recs", [("u1", b"[]")])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RANKLINE_"))}
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "store", "rollback"],
                         env={**env, "RANKLINE_HOME": str(home)}, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "nothing to roll back to" in res.stderr and "rankline run-dag hulk_refresh" in \
        res.stderr, res.stderr
    assert store.current("recs").version == 1  # still served


def test_pause_and_unpause_print_the_state_after_the_command():
    from pipeline.cli import pause_table

    before = "dag_id | is_paused\n=======+==========\ningest | True     \n"
    after = pause_table(before, paused=False)
    assert after.splitlines()[2].split("|")[1].strip() == "False"
    assert after.splitlines()[:2] == before.splitlines()[:2]
    assert pause_table('[{"dag_id": "ingest", "is_paused": false}]', paused=True) == \
        '[{"dag_id": "ingest", "is_paused": true}]\n'
    assert pause_table("No paused DAGs were found\n", paused=False) == \
        "No paused DAGs were found\n"
