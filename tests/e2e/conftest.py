"""The e2e tier's shared pieces: one demo run for the whole session (the other e2e modules
build on its ``var/``), the CLI in a subprocess, and the serving API on a free port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline import services
from tests.conftest import TINY


def cli_env(home: Path) -> dict[str, str]:
    """This process's environment without AIRFLOW_*/RANKLINE_*, plus tiny settings under ``home``.

    The shared demo trains XGBoost only (deterministic, so a retrain is identical); the test of
    the model families trains the neural ones on top of it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RANKLINE_"))}
    return {**env, **TINY, "RANKLINE_HOME": str(home), "RANKLINE_MODELS": "xgboost"}


def run_cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``rankline <args>`` in a subprocess; with ``check``, a failure shows its output."""
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env,
                         capture_output=True, text=True, timeout=900)
    if check:
        assert res.returncode == 0, \
            f"rankline {args} failed:\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
    return res


def rankline(env: dict[str, str], *args: str) -> str:
    """``rankline <args>``'s standard output; the test fails if the command does."""
    return run_cli(env, *args).stdout


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The shared demo (through the scheduler): its home, environment and output."""
    home = tmp_path_factory.mktemp("e2e") / "var"
    env = cli_env(home)
    return home, env, rankline(env, "demo")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return services.free_port()


@contextlib.contextmanager
def serve(env: dict[str, str], log: Path | None = None) -> Iterator[tuple[str, dict]]:
    """``rankline serve`` on a free 127.0.0.1 port; yields the base URL and /healthz's answer.
    With ``log``, the server's output goes to that file."""
    port = free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
                            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                health = httpx.get(f"{base}/healthz", timeout=5).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, "serving API exited"
                time.sleep(0.2)
        else:
            pytest.fail("serving API did not start")
        yield base, health
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if log:
            out.close()
