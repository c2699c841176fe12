"""The layers point one way: the import-linter contracts of pyproject.toml hold.

``dags -> pipeline -> models -> feature_store -> serving``, never back; the reader client pulls in
neither the pipeline, Airflow nor MLflow; the store interface imports no backend. Runs the
``lint-imports`` installed beside this Python on the checkout under test.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    exe = Path(sys.executable).parent / "lint-imports"
    assert exe.exists(), f"{exe} is missing: install the dev extras (pip install -e '.[dev]')"
    # this checkout first on the path, ahead of any editable install of another one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"import contracts broken:\n{proc.stdout}\n{proc.stderr}"
    assert "0 broken" in proc.stdout, proc.stdout
