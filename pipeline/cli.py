"""The ``rankline`` command line: the demo, single DAG runs, the serving API and the store."""

from __future__ import annotations

import datetime as dt
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.airflow_env import API_PORT
from pipeline.services import MLFLOW_PORT, SERVE_PORT, STOP_TIMEOUT_S

app = typer.Typer(help="rankline: ranked recommendations from interaction logs, on Airflow.",
                  no_args_is_help=True)
store_app = typer.Typer(help="Inspect and roll back the serving store.", no_args_is_help=True)
app.add_typer(store_app, name="store")
source_app = typer.Typer(help="Inspect a data location before ingesting it.", no_args_is_help=True)
app.add_typer(source_app, name="source")
model_app = typer.Typer(help="List registered model versions; promote one by hand.",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")


def _settings() -> Any:
    from pipeline.settings import get_settings

    return get_settings()


def _airflow() -> tuple[Any, dict[str, Any]]:
    from pipeline import airflow_env

    airflow_env.configure(_settings())
    airflow_env.migrate()
    return airflow_env, airflow_env.load_dags()


@app.command()
def demo(
    days: Annotated[int | None, typer.Option(help="Logical dates to ingest (default: "
                                             "RANKLINE_DEMO_DAYS, 20)")] = None,
    in_process: Annotated[bool, typer.Option(
        "--in-process", help="Run each DAG run in this process with dag.test() instead of "
        "through the scheduler: faster, no Airflow processes (tests, debugging)")] = False,
) -> None:
    """Run the whole pipeline as Airflow DAG runs on the embedded defaults (through Airflow's
    scheduler, as in production), then summarise."""
    from pipeline.settings import DEMO_DAYS_RULE

    s = _settings()
    if days is not None:
        s.demo_days = days
    if s.demo_days < s.min_demo_days:  # checked here: only the demo ingests this many dates
        raise typer.BadParameter(
            f"{s.demo_days} dates are too few: training as of the last date needs "
            f"{DEMO_DAYS_RULE} = {s.min_demo_days}", param_hint="--days / RANKLINE_DEMO_DAYS")
    from pipeline.orchestrate import DemoFailed, Interrupted, run_demo
    from pipeline.services import log_dir

    t0 = time.perf_counter()
    dates = s.demo_dates()
    try:
        published = (_demo_in_process(s, dates) if in_process else
                     run_demo(s, dates, typer.echo))
    except DemoFailed as exc:
        typer.echo(f"\n[demo] failed: {exc}", err=True)
        raise typer.Exit(1) from None
    except Interrupted as exc:
        typer.echo(f"[demo] stopped by {exc.signame}: Airflow's components are stopped and no "
                   "run is left queued or running; `rankline demo` again runs the dates that "
                   "did not finish", err=True)
        raise typer.Exit(128 + signal.Signals[exc.signame].value) from None
    if not published:
        summary(s, dates, served=False)
        typer.echo("\nNo model beat the baselines, so there is no champion and nothing to "
                   "publish: the refresh would only serve a promoted model. To serve it anyway:"
                   " rankline model list; rankline model promote VERSION --reason '...'; "
                   "rankline run-dag hulk_refresh", err=True)
        raise typer.Exit(1)
    wall = time.perf_counter() - t0
    summary(s, dates)
    # the largest process: this one, or any reaped descendant (the scheduler's task processes)
    peak = max(resource.getrusage(who).ru_maxrss for who in
               (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    typer.echo(f"\nDemo wall time {wall:.0f}s (pipeline, before the summary); largest process "
               f"{peak:.0f} MiB\nAirflow's own logs: {log_dir(s.home)}; see the runs in the "
               "Airflow UI: make up")


def _demo_in_process(s: Any, dates: list[dt.date]) -> bool:
    """The demo's runs with ``dag.test()`` in this process; whether a model was published."""
    from pipeline.tracking import champion_version

    t0 = time.perf_counter()
    af, dags = _airflow()
    for i, d in enumerate(dates, 1):
        t = time.perf_counter()
        af.run_dag(dags["ingest"], d)
        done = time.perf_counter() - t0
        typer.echo(f"[demo] ingest {d} ok ({i}/{len(dates)}, {time.perf_counter() - t:.1f}s, "
                   f"ETA {done / i * (len(dates) - i):.0f}s)")
    af.run_dag(dags["train"], conf={"as_of": dates[-1].isoformat()})
    typer.echo("[demo] train ok")
    if champion_version(s) is None:
        return False
    af.run_dag(dags["hulk_refresh"], conf={"as_of": dates[-1].isoformat()})
    typer.echo("[demo] hulk_refresh ok")
    return True


def summary(s: Any, dates: list[dt.date], served: bool = True) -> None:
    """Print what the demo produced: rows per day, metrics, MLflow runs, store, one answer."""
    import json

    import mlflow
    import pandas as pd

    from pipeline import tracking
    from pipeline.landing import is_valid
    from serving.backends import open_store
    from serving.client import NAMESPACE
    from serving.store import redact_url

    counts = pd.DataFrame({
        d.isoformat(): {t: pd.read_parquet(s.raw_dir / t / f"date={d.isoformat()}",
                                           columns=[]).shape[0]
                        for t in ("impressions", "clicks", "add_to_cart", "purchases")}
        for d in dates}).T
    counts["validated"] = [is_valid(s, d) for d in dates]
    typer.echo("\n== Rows acquired and validated per day ==\n" + counts.to_string())

    exp_id = tracking.configure(s)
    runs = mlflow.search_runs([exp_id], order_by=["start_time DESC"])
    train = runs[runs["tags.airflow.dag_id"] == "train"].iloc[0]
    csv = mlflow.artifacts.download_artifacts(run_id=train["run_id"], artifact_path="evaluation.csv")
    metrics = pd.read_csv(csv, index_col="model").sort_values("ndcg@10", ascending=False)
    typer.echo("\n== Held-out metrics (test dates "
               f"{train.get('params.test_dates', '?')}) ==\n{metrics.round(4).to_string()}")
    from pipeline.training import family_comparisons

    per = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=train["run_id"],
                                                          artifact_path="per_group.csv"))
    for line in family_comparisons(s, per, list(metrics.index)):
        typer.echo(line)
    # the gate's decision line: paired intervals, group count and verdict (training.should_promote)
    typer.echo(f"promotion gate: {train.get('tags.promotion_reason')}\n"
               f"promoted: {train.get('tags.promoted')}"
               + (f" ({train.get('tags.promoted_family')})" if train.get("tags.promoted_family")
                  else ""))

    typer.echo(f"\n== MLflow: experiment {s.experiment!r} (id {exp_id}) at "
               f"{redact_url(s.tracking_uri)} ==")
    for dag_id, n in runs["tags.airflow.dag_id"].value_counts().items():
        typer.echo(f"  {dag_id}: {n} run(s)")
    typer.echo(f"  latest train run: {train['run_id']}")
    if not served:
        return

    store = open_store(s, create=False)
    cur = store.current(NAMESPACE)
    store.close()
    user = cur.meta["sample_user"]
    typer.echo(f"\n== Serving store {store!r}: version {cur.version}, {cur.n_keys} keys,"
               f" model {cur.meta.get('model_uri')} ==")

    import httpx

    key = {"X-API-Key": s.api_key} if s.api_key else {}
    with _Served() as base:
        body = httpx.get(f"{base}/v1/recommendations/{user}", params={"k": 5}, headers=key,
                         timeout=30).json()
        unknown = httpx.get(f"{base}/v1/recommendations/nobody_here", params={"k": 3},
                            headers=key, timeout=30).json()
    typer.echo(f"GET /v1/recommendations/{user}?k=5 -> {json.dumps(body)}")
    typer.echo(f"GET /v1/recommendations/nobody_here?k=3 -> cold_start={unknown['cold_start']}, "
               f"items={[i['item_id'] for i in unknown['items']]}")


class _Served:
    """Run the serving API with uvicorn on a free 127.0.0.1 port for the block's duration."""

    def __enter__(self) -> str:
        import httpx

        from pipeline.services import free_port

        port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "pipeline.serve:app_from_settings",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=os.environ.copy())
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                return base
            except httpx.HTTPError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the serving API exited at start") from None
                time.sleep(0.2)
        raise RuntimeError("the serving API did not start within 20 s")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@app.command("run-dag")
def run_dag(
    dag_id: Annotated[str, typer.Argument(help="ingest, train or hulk_refresh")],
    date: Annotated[str | None, typer.Option(help="Logical date (ingest) or as_of (others)")] = None,
    conf: Annotated[str, typer.Option(
        help='Run parameters as JSON, e.g. \'{"rollback": true, "reason": "bad model"}\'')] = "{}",
) -> None:
    """Run one DAG run in-process (recorded in Airflow's database)."""
    import json

    af, dags = _airflow()
    if dag_id not in dags:
        raise typer.BadParameter(f"unknown DAG {dag_id!r}; known: {sorted(dags)}")
    try:
        params = json.loads(conf)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--conf is not JSON: {exc}") from exc
    if dag_id == "ingest":
        af.run_dag(dags[dag_id], dt.date.fromisoformat(date) if date else None, conf=params)
    else:
        af.run_dag(dags[dag_id], conf={**({"as_of": date} if date else {}), **params})
    typer.echo(f"{dag_id} ok")


sweep_app = typer.Typer(help="Tune a family's hyperparameters; compare samplers.",
                        invoke_without_command=True)
app.add_typer(sweep_app, name="sweep")


@sweep_app.callback()
def sweep(
    ctx: typer.Context,
    family: Annotated[str | None, typer.Option(
        help="The model family to tune (default: the first of RANKLINE_MODELS)")] = None,
    trials: Annotated[int | None, typer.Option(
        help="Trials (default: RANKLINE_SWEEP_TRIALS)")] = None,
    sampler: Annotated[str | None, typer.Option(
        help="tpe, random or grid (default: RANKLINE_SWEEP_SAMPLER)")] = None,
    date: Annotated[str | None, typer.Option(help="as_of of the split (default: the newest "
                                             "validated date)")] = None,
) -> None:
    """Tune a family: one sweep DAG run in this process (its trials one after another; the
    scheduler runs RANKLINE_SWEEP_PARALLEL at a time). The next train starts from the best."""
    import json

    if ctx.invoked_subcommand:
        return
    from pipeline.settings import get_settings

    os.environ["RANKLINE_SWEEP_PARALLEL"] = "1"  # one trial at a time here: each gets every core
    get_settings.cache_clear()
    conf = {**({"family": family} if family else {}), **({"trials": trials} if trials else {}),
            **({"sampler": sampler} if sampler else {}), **({"as_of": date} if date else {})}
    run_dag("sweep", None, json.dumps(conf))


def _as_of(date: str | None) -> dt.date:
    from pipeline.dag_support import NoFeatures, newest_features_date

    if date:
        return dt.date.fromisoformat(date)
    try:
        return newest_features_date(_settings())
    except NoFeatures as exc:
        raise typer.BadParameter(str(exc)) from None


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _family(value: str | None) -> str:
    """The family of a ``--family`` option: the one given, else the first of RANKLINE_MODELS."""
    return value or _settings().model_families[0]


def _families(value: str | None) -> list[str]:
    """The families of a ``--families`` option: those given, else ``RANKLINE_MODELS``."""
    return _names(value) if value else _settings().model_families


DateOption = Annotated[str | None, typer.Option(
    help="as_of of the (newest) split (default: the newest validated date)")]


@sweep_app.command("compare")
def sweep_compare(
    family: Annotated[str | None, typer.Option(
        help="The model family tuned (default: the first of RANKLINE_MODELS)")] = None,
    samplers: Annotated[str, typer.Option(help="The two samplers compared")] = "tpe,random",
    repeats: Annotated[int, typer.Option(help="Sweeps per sampler")] = 10,
    trials: Annotated[int, typer.Option(help="Trials per sweep")] = 10,
    fraction: Annotated[float, typer.Option(
        help="Fraction of the training groups each trial trains on")] = 0.25,
    date: DateOption = None,
) -> None:
    """Compare two samplers: REPEATS small sweeps each, best-seen traces, and a Mann-Whitney U
    test on the best values found and on the area under the best-seen curve (logged to MLflow,
    tag rankline.job=sweep-compare). Last line: mann-whitney p: <p> (<conclusion>)."""
    from pipeline.selection import compare_samplers

    names = _names(samplers)
    family = _family(family)
    res = compare_samplers(_settings(), _as_of(date), family, tuple(names), repeats, trials,
                           fraction)  # type: ignore[arg-type]
    typer.echo(f"{family}: {repeats} sweeps of {trials} trials per sampler on {fraction:.0%} "
               f"of the training groups (MLflow run {res['run_id']})")
    for what, label in (("auc", "area under the best-seen curve"), ("best", "best value found")):
        r = res[what]
        medians = ", ".join(f"{n} {m:.4f}" for n, m in zip(names, r["median"], strict=True))
        typer.echo(f"{label}: median {medians}; U={r['u']:.1f}, p={r['p']:.3g} "
                   f"({r['conclusion']})")
    typer.echo(f"mann-whitney p: {res['best']['p']:.3g} ({res['best']['conclusion']})")


@app.command("learning-curve")
def learning_curve_cmd(
    families: Annotated[str | None, typer.Option(
        help="Families, comma-separated (default: RANKLINE_MODELS)")] = None,
    fractions: Annotated[str, typer.Option(
        help="Fractions of the training groups")] = "0.05,0.1,0.25,0.5,1",
    seeds: Annotated[int, typer.Option(help="Draws (and model seeds) per fraction")] = 3,
    date: DateOption = None,
) -> None:
    """Validation and held-out NDCG@10 against the fraction of training data, per family
    (logged to MLflow with a plot, tag rankline.job=learning-curve)."""
    from pipeline.selection import learning_curve

    table = learning_curve(_settings(), _as_of(date), _families(families),
                           [float(f) for f in _names(fractions)], seeds)
    stats = table.groupby(["family", "fraction"])[["valid_ndcg@10", "test_ndcg@10"]].agg(
        ["mean", "std"])
    typer.echo(stats.round(4).to_string())


@app.command("cv")
def cv_cmd(
    families: Annotated[str | None, typer.Option(
        help="Families, comma-separated (default: RANKLINE_MODELS)")] = None,
    folds: Annotated[int, typer.Option(help="Rolling origins (held-out windows)")] = 3,
    date: DateOption = None,
) -> None:
    """Time-series cross-validation: FOLDS rolling origins, the families and the baselines
    scored on each fold's held-out dates; mean and spread over the folds (logged to MLflow,
    tag rankline.job=cv)."""
    from pipeline.selection import cross_validate, cv_summary

    table = cross_validate(_settings(), _as_of(date), _families(families), folds)
    typer.echo(table.pivot(index="test_dates", columns="model", values="ndcg@10")
               .round(4).to_string())
    typer.echo(cv_summary(table).round(4).to_string())


@app.command("select-features")
def select_features_cmd(
    family: Annotated[str | None, typer.Option(
        help="The family stage 2 and the report train (default: the first of RANKLINE_MODELS)"
    )] = None,
    fraction: Annotated[float, typer.Option(
        help="Fraction of the training groups the stages and the report train on")] = 0.25,
    repeats: Annotated[int, typer.Option(help="Shadow-feature repeats (stage 1)")] = 3,
    tolerance: Annotated[float, typer.Option(
        help="Validation NDCG@10 a left-out feature may cost (stage 2)")] = 0.0,
    date: DateOption = None,
) -> None:
    """Propose features to leave out: shadow features, then backward elimination on
    validation NDCG@10; the selected set against all features and random subsets of its size
    on the held-out dates (logged to MLflow, tag rankline.job=select-features). Accept the
    proposal with the RANKLINE_DROP_FEATURES line it prints last."""
    from pipeline.feature_selection import select_features

    res = select_features(_settings(), _as_of(date), _family(family), fraction, repeats,
                          tolerance)
    st1 = res["stage1"]
    typer.echo(f"stage 1 (shadow features, {st1['repeats']} repeats): "
               f"{len(st1['survivors'])} survive, screened out: "
               f"{', '.join(st1['screened_out']) or 'none'}")
    typer.echo(f"stage 2 (backward elimination): kept {len(res['kept'])}: "
               f"{', '.join(res['kept'])}")
    for name in ("selected", "all", "random"):
        typer.echo(f"{name:>8}: valid NDCG@10 {res['valid_ndcg@10'][name]:.4f}, held-out "
                   f"{res['test_ndcg@10'][name]:.4f}")
    for other, iv in res["selected_minus"].items():
        typer.echo(f"selected - {other} on the held-out dates: {iv['mean']:+.4f} "
                   f"[{iv['low']:+.4f}, {iv['high']:+.4f}] over {res['groups']:,} groups "
                   f"({iv['conclusion']})")
    typer.echo(f"MLflow run {res['run_id']}; accept with: {res['accept']}")


@app.command("airflow-env")
def airflow_env_cmd() -> None:
    """Print the AIRFLOW_* exports of the embedded deployment (eval "$(rankline airflow-env)")."""
    from pipeline.airflow_env import airflow_env

    for k, v in airflow_env(_settings()).items():
        typer.echo(f"export {k}={v!r}")


AIRFLOW_LOGIN = ("no login: the embedded setup uses Airflow's simple auth manager with every "
                 "user an admin;\n             its API accepts writes from anyone who reaches it: "
                 "keep it on 127.0.0.1")


@app.command()
def up(
    airflow_port: Annotated[int, typer.Option(help="Port of the Airflow UI and API server")] = API_PORT,
    mlflow_port: Annotated[int, typer.Option(help="Port of the MLflow UI")] = MLFLOW_PORT,
    serve_port: Annotated[int, typer.Option(help="Port of the serving API")] = SERVE_PORT,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the services to answer")] = 180,
) -> None:
    """Start Airflow (API server, DAG processor, scheduler), the MLflow UI and the serving API
    in the background on 127.0.0.1; PIDs in <home>/run, logs in <home>/logs. A service already
    running is left alone."""
    from pipeline import services

    s = _settings()
    home = s.home
    todo = services.rankline_services(s, api_port=airflow_port, mlflow_port=mlflow_port,
                                      serve_port=serve_port)
    running = {svc.name: services.running_pid(svc.name, home) for svc in todo}
    taken = [f"{svc.name}: port {services.HOST}:{svc.port} is taken by another program"
             for svc in todo if running[svc.name] is None and svc.port is not None
             and not services.port_free(svc.port)]
    if taken:  # checked before starting anything
        typer.echo("\n".join(taken) + "\npick others: rankline up --help", err=True)
        raise typer.Exit(1)
    try:
        if services.ensure_db(todo[0].env, home):
            typer.echo(f"created Airflow's database (airflow db migrate; "
                       f"{services.log_file('airflow-db-migrate', home)})")
    except RuntimeError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    for svc in todo:
        if (pid := running[svc.name]) is not None:
            typer.echo(f"{svc.name}: already running (pid {pid})")
            continue
        pid = services.start(svc.name, svc.argv, svc.env, home)
        typer.echo(f"{svc.name}: started (pid {pid}, log {services.log_file(svc.name, home)})")
    deadline = time.monotonic() + wait
    pending = [svc for svc in todo if svc.port is not None]
    while True:
        for svc in todo:
            if services.running_pid(svc.name, home) is None:
                log = services.log_file(svc.name, home)
                typer.echo(f"{svc.name} exited; the end of {log}:\n{services.tail(log)}\n"
                           "(the others keep running: rankline down stops them)", err=True)
                raise typer.Exit(1)
        pending = [svc for svc in pending if not services.answers(svc.port)]
        if not pending:
            break
        if time.monotonic() > deadline:
            typer.echo(f"not answering after {wait:.0f}s: {[svc.name for svc in pending]}; "
                       f"see their logs in {services.log_dir(home)}", err=True)
            raise typer.Exit(1)
        time.sleep(1)
    urls = {svc.name: svc.url for svc in todo}
    typer.echo(f"\nAirflow UI   {urls['airflow-api-server']}\n             {AIRFLOW_LOGIN}")
    if "mlflow-ui" in urls:
        typer.echo(f"MLflow UI    {urls['mlflow-ui']}")
    else:
        from serving.store import redact_url

        typer.echo(f"MLflow       {redact_url(s.tracking_uri)} (a tracking server: its own UI)")
    typer.echo(f"Serving API  {urls['serving-api']}/docs  (recommendations: 404 until a refresh "
               "has published)")
    typer.echo(f"PIDs in {services.run_dir(home)}, logs in {services.log_dir(home)}; stop with "
               "make down (rankline down)")


@app.command()
def down(
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait after SIGTERM before SIGKILL, per service")] = STOP_TIMEOUT_S,
) -> None:
    """Stop every service rankline up started (SIGTERM to each one's process group, SIGKILL
    after --timeout) and remove their PID files."""
    from pipeline import services

    home = _settings().home
    names = services.stop_order(home)
    if not names:
        typer.echo(f"nothing to stop (no PID file in {services.run_dir(home)})")
    for name in names:
        pid = services.read_pid(name, home)
        ran = services.stop(name, home, timeout)
        typer.echo(f"{name}: {'stopped' if ran else 'was not running'} (pid {pid})")


@app.command()
def status() -> None:
    """List the services rankline up started: running or not, PID and log file."""
    from pipeline import services

    home = _settings().home
    found = services.status(home)
    if not found:
        typer.echo(f"no service started (no PID file in {services.run_dir(home)})")
    for name, pid in found.items():
        state = f"running (pid {pid})" if pid else "not running (stale PID file)"
        typer.echo(f"{name:<22} {state:<22} {services.log_file(name, home)}")


@app.command("airflow", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def airflow_cmd(ctx: typer.Context) -> None:
    """Airflow's CLI on the embedded deployment (its AIRFLOW_* variables set; the database
    created first if missing): rankline airflow dags list."""
    from pipeline import services
    from pipeline.airflow_env import airflow_env

    s = _settings()
    env = {**airflow_env(s), **os.environ}
    # `dags show` is the only command that renders with graphviz; the others warn on every call
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"),
                                                   "ignore:Could not import graphviz"]))
    args = list(ctx.args)
    if args[:1] != ["db"]:
        try:
            services.ensure_db(env, s.home)
        except RuntimeError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    airflow = Path(sys.executable).with_name("airflow")
    exe = str(airflow) if airflow.exists() else "airflow"
    sys.stdout.flush()
    sys.stderr.flush()
    if args[:2] in (["dags", "pause"], ["dags", "unpause"]):
        res = subprocess.run([exe, *args], env=env, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(pause_table(res.stdout, args[1] == "pause") if res.returncode == 0
                         else res.stdout)
        raise typer.Exit(res.returncode)
    os.execvpe(exe, [exe, *args], env)


def pause_table(out: str, paused: bool) -> str:
    """Airflow's ``dags pause``/``unpause`` output with ``is_paused`` as it is after the command
    (pure): Airflow 3 prints the value it read before the change. Table and JSON outputs."""
    import json

    try:
        rows = json.loads(out)
    except ValueError:
        lines = out.splitlines(keepends=True)
        head = next((i for i, line in enumerate(lines) if "is_paused" in line), None)
        if head is None:
            return out
        col = [c.strip() for c in lines[head].split("|")].index("is_paused")
        for i in range(head + 1, len(lines)):
            cells = lines[i].split("|")
            if len(cells) > col and cells[col].strip() in ("True", "False"):
                width = len(cells[col])
                cells[col] = f" {paused}".ljust(width)
                lines[i] = "|".join(cells)
        return "".join(lines)
    if isinstance(rows, list):
        rows = [{**r, "is_paused": paused} if isinstance(r, dict) and "is_paused" in r else r
                for r in rows]
        return json.dumps(rows) + "\n"
    return out


@app.command()
def relocate() -> None:
    """After moving RANKLINE_HOME (var/): rewrite the absolute paths MLflow's local database
    keeps (artifact locations, model versions, Data Docs links) to the new place."""
    from pipeline.relocate import recorded_home
    from pipeline.relocate import relocate as rewrite

    s = _settings()
    old = recorded_home(s.home)
    changed = rewrite(s.home, s.tracking_uri)
    if not changed:
        typer.echo(f"{s.home}: nothing to rewrite (created here, or tracking is not local)")
        return
    typer.echo(f"moved from {old} to {s.home}: " + ", ".join(f"{k} {v}" for k, v in
                                                          changed.items()) + " row(s) rewritten")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
) -> None:
    """Serve recommendations over HTTP (FastAPI on uvicorn; docs at /docs)."""
    import uvicorn

    uvicorn.run("pipeline.serve:app_from_settings", factory=True, host=host, port=port)


@store_app.command("versions")
def store_versions(namespace: Annotated[str, typer.Option(help="Namespace")] = "recs") -> None:
    """List the store's versions of a namespace, newest first."""
    from serving.backends import opened

    with opened(_settings(), create=False) as store:
        for v in store.versions(namespace):
            typer.echo(f"{v.version:>4}  {v.state:<8} {v.created_at}  {v.n_keys:>8} keys  "
                       f"{v.meta.get('model_uri', '')}")
        typer.echo("\nlast events:")
        for e in store.events(namespace, 10):
            typer.echo(f"  {e['at']}  {e['action']:<8} {e['from']} -> {e['to']}  by {e['who']}"
                       + (f": {e['why']}" if e["why"] else ""))


@store_app.command("rollback")
def store_rollback(
    to: Annotated[int | None, typer.Option(help="Version to serve (default: the previous)")] = None,
    why: Annotated[str, typer.Option(help="Reason, recorded with the switch")] = "",
    namespace: Annotated[str, typer.Option(help="Namespace")] = "recs",
) -> None:
    """Serve an older kept version again (an instant switch), logged to MLflow with who/when/why."""
    from pipeline import steps

    out = steps.rollback(_settings(), to, why, namespace=namespace)
    typer.echo(f"{namespace} now serves version {out['rollback.to_version']} (was "
               f"{out['rollback.from_version']}); MLflow run {out['mlflow_run_id']}")


@source_app.command("export-movielens")
def source_export_movielens(
    lake: Annotated[str, typer.Argument(help="Folder to write interactions/date=D/ under")],
    days: Annotated[int, typer.Option(min=1, help="Data-set days with ratings to export")] = 60,
    start: Annotated[str, typer.Option(help="First logical date (YYYY-MM-DD)")] = "2026-01-01",
) -> None:
    """Write MovieLens-100K (from recbole) as a generic interaction log: a real log to try."""
    from pipeline.sources.movielens import RATING_LABELS_SETTING, export_interactions

    dates = export_interactions(lake, days, dt.date.fromisoformat(start))
    typer.echo(f"{len(dates)} date(s), {dates[0]} .. {dates[-1]}, under {lake}/interactions/\n"
               f"ingest them with RANKLINE_SOURCE=interactions RANKLINE_SOURCE_URI={lake} "
               f"RANKLINE_EVENT_LABELS={RATING_LABELS_SETTING}")


@model_app.command("list")
def model_list() -> None:
    """Registered model versions, newest first: the champion, and each gate decision."""
    from pipeline import tracking

    s = _settings()
    champ = tracking.champion_version(s)  # search results carry no aliases
    for v in tracking.model_versions(s):
        mark = "champion" if champ is not None and str(champ.version) == str(v.version) else "-"
        typer.echo(f"{v.version:>4}  {mark:<8}  run {v.run_id}  "
                   f"{v.tags.get('promotion', v.tags.get('gate', ''))}")


@model_app.command("promote")
def model_promote(
    version: Annotated[str, typer.Argument(help="Registered model version (rankline model list)")],
    reason: Annotated[str, typer.Option(help="Why the gate is overridden (recorded)")],
) -> None:
    """Make a version the champion by hand (overrides the gate; the reason is recorded).

    The next hulk_refresh serves it: rankline run-dag hulk_refresh.
    """
    import getpass

    from pipeline import tracking

    s = _settings()
    if not reason.strip():
        raise typer.BadParameter("say why the gate is overridden", param_hint="--reason")
    known = {str(v.version) for v in tracking.model_versions(s)}
    if version not in known:
        raise typer.BadParameter(f"no version {version} of {tracking.MODEL_NAME}; known: "
                                 f"{sorted(known, key=int)} (rankline model list)",
                                 param_hint="VERSION")
    tracking.promote(s, version, f"manual by {getpass.getuser()}: {reason}")
    typer.echo(f"version {version} is the champion; publish it with: "
               "rankline run-dag hulk_refresh")


@source_app.command("check")
def source_check(
    uri: Annotated[str, typer.Argument(help="Root of the location (local path or fsspec URI)")],
    shape: Annotated[str | None, typer.Option(
        help="funnel (<table>/date=D/) or interactions (interactions/date=D/); default: "
        "detected from the folders present")] = None,
    limit_dates: Annotated[int | None, typer.Option(
        min=1, help="Check only the first N dates found")] = None,
) -> None:
    """List a location's dates and rows per table, and validate every date (nothing is ingested).

    Exit code 0 when every date passes validation, 1 otherwise. Labels of the interactions shape
    come from RANKLINE_EVENT_LABELS.
    """
    import tempfile
    from pathlib import Path

    from pipeline.sources import location

    logging.getLogger().setLevel(logging.WARNING)  # the report is the output, not the GX log

    if shape not in (None, "funnel", "interactions"):
        raise typer.BadParameter(f"{shape!r} is not funnel or interactions", param_hint="--shape")
    try:
        found_shape, dates = location.scan(uri, shape)
    except FileNotFoundError as exc:
        typer.echo(f"source check: {exc}", err=True)
        raise typer.Exit(1) from None
    shown = dates[:limit_dates] if limit_dates else dates
    typer.echo(f"{location.shown_uri(uri)}: {found_shape} shape, {len(dates)} date(s)"
               + (f", checking the first {len(shown)}" if len(shown) < len(dates) else ""))
    if not dates:
        typer.echo("no date=YYYY-MM-DD partitions found", err=True)
        raise typer.Exit(1)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="rankline-source-check-") as tmp:
        for date in shown:
            result = location.check_date(uri, found_shape, date, Path(tmp) / date.isoformat(),
                                         _settings().event_labels)
            rows = "  ".join(f"{t}={n}" for t, n in result.rows.items())
            typer.echo(f"{date}  {'ok' if result.ok else 'FAILED'}  {rows}")
            for problem in result.problems:
                typer.echo(f"    - {problem}")
            failed += not result.ok
    typer.echo(f"{len(shown) - failed} of {len(shown)} date(s) pass validation")
    if failed:
        raise typer.Exit(1)


docs_app = typer.Typer(help="Write the documentation pages generated from the code.",
                       no_args_is_help=True)
app.add_typer(docs_app, name="docs")


@docs_app.command("config")
def docs_config(
    check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 when docs/configuration.md differs from the "
        "settings")] = False,
) -> None:
    """Write docs/configuration.md (every RANKLINE_* setting) from pipeline/settings.py.

    With --check nothing is written: exit 1 when the page is stale.
    """
    from pipeline import settings_doc

    text, path = settings_doc.render(), settings_doc.DOC_PATH
    if check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            typer.echo(settings_doc.STALE, err=True)
            raise typer.Exit(1)
        typer.echo("docs/configuration.md is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}")


def main() -> None:
    """Entry point: settings checked before any work (exit 2 naming each bad variable, no
    traceback), then logging set up and the command run."""
    from pipeline.settings import SettingsError, get_settings

    if len(sys.argv) > 1 and "--help" not in sys.argv[1:]:
        try:
            get_settings()
        except SettingsError as exc:
            typer.echo(str(exc), err=True)
            raise SystemExit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from serving.store import StoreError

    try:
        app()
    except StoreError as exc:  # an expected answer (no older version, store down): no traceback
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
