"""The Airflow UI of a home, checked in a real browser (headless Chromium).

Starts Airflow's API server (which serves the UI) for ``--home`` on a free 127.0.0.1 port, opens
the pages a user opens after ``make demo`` (the DAG list, a DAG's run grid, a run, a task's log)
in headless Chromium, and prints, per page, whether the texts that show it rendered with real
data are in the rendered DOM, and where its screenshot is. Exit status 1 if a page lacks one.

Needs Debian's Chromium (``apt-get install chromium``: /usr/bin/chromium); the demo's runs in
the home (``make demo`` first). Not part of the test suite: CI machines have no browser.

    .venv/bin/python bench/ui_check.py --home var
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline import services
from pipeline.settings import Settings

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1500,1000",
                  "--virtual-time-budget=20000", "--run-all-compositor-stages-before-draw"]


def chromium(url: str, out: Path, profile: Path) -> str:
    """The DOM of ``url`` after the page settled; a screenshot to ``out``."""
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    subprocess.run([*base, f"--screenshot={out}", url], capture_output=True, timeout=120)
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return dom.stdout


def api(base: str, path: str, token: str) -> dict:
    """GET ``/api/v2/<path>`` with a bearer token."""
    req = urllib.request.Request(f"{base}/api/v2/{path}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def token(base: str) -> str:
    """A token of the embedded deployment (simple auth manager, everyone admin)."""
    with urllib.request.urlopen(f"{base}/auth/token", timeout=30) as resp:
        return json.loads(resp.read())["access_token"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, default=Path("var"))
    ap.add_argument("--out", type=Path, default=None, help="screenshots (default <home>/ui)")
    args = ap.parse_args()
    home = args.home.resolve()
    if not (home / "airflow").is_dir():
        sys.exit(f"{home} has no Airflow runs: run `make demo` first")
    if not Path(shutil.which("chromium") or "/usr/bin/chromium").exists():
        sys.exit("no Chromium: apt-get install chromium")
    out = (args.out or home / "ui").resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home)
    port = services.free_port()
    api_server = services.airflow_services(settings, None, port)[0]
    services.start("ui-check-api-server", api_server.argv, api_server.env, home)
    base = f"http://127.0.0.1:{port}"
    failures = 0
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                tok = token(base)
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"API server did not answer: {services.log_file('ui-check-api-server', home)}")
                time.sleep(1)
        runs = api(base, "dags/ingest/dagRuns?order_by=-logical_date&limit=1", tok)["dag_runs"]
        if not runs:
            sys.exit("no ingest run in this home: run `make demo` first")
        run_id = runs[0]["dag_run_id"]
        tis = api(base, f"dags/ingest/dagRuns/{urllib.parse.quote(run_id)}/taskInstances", tok)
        log = api(base, f"dags/ingest/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/"
                  "features/logs/1?full_content=true", tok)
        logged = json.dumps(log)
        quoted = urllib.parse.quote(run_id)
        pages = [
            ("DAG list", "/dags", ["ingest", "train", "hulk_refresh"]),
            ("ingest run grid", "/dags/ingest", ["ingest", run_id[:18]]),
            ("ingest run", f"/dags/ingest/runs/{quoted}", ["acquire", "validate", "features"]),
            ("features task log", f"/dags/ingest/runs/{quoted}/tasks/features",
             ["features", "Task instance is in running state" if "running state" in logged
              else "Done. Returned value"]),
        ]
        print(f"UI at {base} (run {run_id}, {len(tis['task_instances'])} task instances; "
              f"the features log has {len(logged)} characters through the API)")
        for i, (name, path, texts) in enumerate(pages):
            shot = out / f"{i + 1}-{name.replace(' ', '-')}.png"
            dom = chromium(f"{base}{path}", shot, out / ".profile")
            missing = [t for t in texts if t not in dom]
            failures += bool(missing)
            state = "ok" if not missing else f"MISSING {missing}"
            print(f"{name:20s} {path:70.70s} {len(dom):8d} chars  {state}  {shot}")
    finally:
        services.stop("ui-check-api-server", home, timeout=20)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
