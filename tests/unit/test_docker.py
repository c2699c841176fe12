"""docker/: the image and the production-like compose stack, checked as files (no daemon needed).

Every variable a service sets must be one its program reads: ``RANKLINE_*`` a setting of
:class:`pipeline.settings.Settings` (and the values must load), ``AIRFLOW__SECTION__KEY`` an
option of Airflow's shipped configuration or of a provider the image installs; commands run
executables the image installs; host ports bind 127.0.0.1; secrets come from ``docker/.env``.
Airflow is not imported: its configuration template and CLI table are read as files. When a
compose binary is on PATH, ``docker-compose config`` validates the file too.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / ".env.example"

IMAGE_EXECUTABLES = {"airflow", "mlflow", "rankline", "dask"}
"""What the rankline image's services may run (healthchecks also run ``python``)."""
OTHER_IMAGE_VARIABLES = {"postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD"},
                         "redis": {"REDISCLI_AUTH"}}
"""Variables of the services on other images, read by those images' own programs."""
AIRFLOW_COMMANDS = {("api-server",), ("scheduler",), ("dag-processor",), ("triggerer",),
                    ("db", "migrate"), ("celery", "worker")}
"""Every component a CeleryExecutor deployment of Airflow 3 runs."""
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|FERNET_KEY|API_KEY|_AUTH)$")

# The [celery] options of apache-airflow-providers-celery==3.26.0 (its get_provider_info()), the
# provider docker/Dockerfile installs and this virtual environment does not; used only while the
# provider is not installed here (then its own configuration is read instead).
CELERY_PROVIDER_VERSION = "3.26.0"
CELERY_OPTIONS = {
    "broker_url", "celery_app_name", "celery_config_options", "extra_celery_config",
    "flower_basic_auth", "flower_host", "flower_port", "flower_url_prefix", "json_logs",
    "mp_forkserver_preload", "mp_start_method", "operation_timeout", "pool", "result_backend",
    "result_backend_sqlalchemy_engine_options", "ssl_active", "ssl_cacert", "ssl_cert", "ssl_key",
    "ssl_mutual_tls", "sync_parallelism", "task_acks_late", "task_logs_to_stdout",
    "task_publish_max_retries", "task_track_started", "worker_autoscale", "worker_concurrency",
    "worker_enable_remote_control", "worker_prefetch_multiplier", "worker_umask"}
CELERY_EXECUTOR = "airflow.providers.celery.executors.celery_executor.CeleryExecutor"

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


# --- helpers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def resolved(service: dict) -> dict[str, str]:
    """A service's environment as compose passes it, with docker/.env.example's values."""
    dummy = example_env()
    return {k: interpolate(v, dummy) for k, v in env_of(service).items()}


def on_rankline_image(service: dict) -> bool:
    return str(service.get("image", "")).startswith("rankline:")


def example_env() -> dict[str, str]:
    """docker/.env.example with every required secret filled with a dummy value."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip() or "0123456789abcdef0123456789abcdef"
    return env


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` and ``$$``."""
    def sub(m: re.Match) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        have = env.get(name)
        if op in (":?", "?"):
            unset = not have if op == ":?" else have is None
            if unset:
                raise KeyError(f"{name}: {arg}")
            return have
        if op == ":-":
            return have or arg
        if op == "-":
            return arg if have is None else have
        return have or ""
    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def referenced(node: object) -> dict[str, str | None]:
    """Every ``${VAR…}`` in the strings of a parsed YAML node: name -> its operator (``:?``
    marks a required one)."""
    if isinstance(node, dict):
        node = [*node.keys(), *node.values()]
    if isinstance(node, list):
        out: dict[str, str | None] = {}
        for item in node:
            for name, op in referenced(item).items():
                out[name] = ":?" if ":?" in (op, out.get(name)) else op
        return out
    return {m["name"]: m["op"] for m in _VAR.finditer(str(node))}


def airflow_dir() -> Path:
    spec = importlib.util.find_spec("airflow")  # locates the package, imports nothing
    assert spec is not None and spec.origin, "apache-airflow is not installed"
    return Path(spec.origin).parent


def installed_providers() -> dict[str, dict]:
    """Each installed Airflow provider's ``get_provider_info()``, run from its file alone."""
    out = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == "apache_airflow_provider":
                path = Path(dist.locate_file(ep.module.replace(".", "/") + ".py"))
                spec = importlib.util.spec_from_file_location(f"_info_{dist.metadata['Name']}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)  # type: ignore[union-attr]
                out[dist.metadata["Name"]] = getattr(module, ep.attr)()
    return out


@pytest.fixture(scope="module")
def airflow_options() -> dict[str, set[str]]:
    """section -> options: Airflow's shipped config.yml, installed providers, the image's celery."""
    template = yaml.safe_load((airflow_dir() / "config_templates" / "config.yml").read_text())
    options = {s: set(v.get("options") or {}) for s, v in template.items()}
    providers = installed_providers()
    for info in providers.values():
        for section, spec in (info.get("config") or {}).items():
            options.setdefault(section, set()).update(spec.get("options") or {})
    if "apache-airflow-providers-celery" not in providers:
        options.setdefault("celery", set()).update(CELERY_OPTIONS)
    return options


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", DOCKERFILE.read_text(), flags=re.M))


def dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.+)$", text, flags=re.M):
        env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


# --- the stack -------------------------------------------------------------------------------

def test_the_stack_has_every_service(services):
    commands = {tuple(s["command"][1:3]) if s["command"][1] in ("db", "celery") else
                (s["command"][1],) for s in services.values()
                if s.get("command") and s["command"][0] == "airflow"}
    assert AIRFLOW_COMMANDS <= commands, f"missing Airflow components: {AIRFLOW_COMMANDS - commands}"
    assert {"postgres", "redis", "mlflow", "serving"} <= set(services)
    assert services["serving"]["command"][:2] == ["rankline", "serve"]
    assert services["mlflow"]["command"][:2] == ["mlflow", "server"]
    assert services["dask-scheduler"]["command"][:2] == ["dask", "scheduler"]
    assert services["dask-worker"]["command"][:2] == ["dask", "worker"]
    gpu = [n for n, s in services.items() if "gpu" in (s.get("profiles") or [])]
    assert gpu == ["airflow-worker-gpu"]
    worker = services["airflow-worker-gpu"]
    assert worker["command"][:3] == ["airflow", "celery", "worker"]
    assert worker["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    cpu_images = {s["image"] for n, s in services.items() if on_rankline_image(s) and n not in gpu}
    assert len(cpu_images) == 1 and worker["image"] not in cpu_images
    for name, s in services.items():
        if on_rankline_image(s) and name not in gpu:
            assert s["build"]["args"]["TORCH_VARIANT"] == "cpu", name


def test_rankline_variables_are_settings_and_load(services, monkeypatch):
    from pipeline.settings import Settings, env_name, get_settings, load_settings

    known = {env_name(f) for f in Settings.model_fields}
    dummy = example_env()
    for name, service in services.items():
        env = env_of(service)
        ours = {k: interpolate(v, dummy) for k, v in env.items() if k.startswith("RANKLINE_")}
        unknown = sorted(set(ours) - known)
        assert not unknown, f"{name}: {unknown} are not rankline settings (pipeline/settings.py)"
        if not ours:
            continue
        assert on_rankline_image(service), f"{name} sets RANKLINE_* but does not run rankline"
        for key in [k for k in os.environ if k.upper().startswith("RANKLINE_")]:
            monkeypatch.delenv(key)
        for key, value in ours.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        try:
            s = load_settings()  # raises SettingsError naming the variable and the value
        finally:
            get_settings.cache_clear()
        assert str(s.home) == dockerfile_env()["RANKLINE_HOME"] == "/var/lib/rankline"


def test_airflow_variables_are_airflow_options(services, airflow_options):
    for name, service in services.items():
        for key in env_of(service):
            if not key.startswith("AIRFLOW__"):
                continue
            parts = key.split("__")
            assert len(parts) == 3, f"{name}: {key} is not AIRFLOW__SECTION__KEY"
            section, option = parts[1].lower(), parts[2].lower()
            known = airflow_options.get(section, set())
            base = re.sub(r"_(cmd|secret)$", "", option)  # AIRFLOW__X__Y_CMD reads [x] y
            assert option in known or base in known, \
                f"{name}: {key}: Airflow has no option [{section}] {option}"


def test_other_variables_are_read_by_their_service(services):
    mlflow_cli = importlib.util.find_spec("mlflow").origin.replace("__init__.py", "cli/__init__.py")
    mlflow_envvars = set(re.findall(r'envvar="(MLFLOW_\w+)"', Path(mlflow_cli).read_text()))
    for name, service in services.items():
        for key in env_of(service):
            if key.startswith(("RANKLINE_", "AIRFLOW__")):
                continue
            if name == "mlflow":
                assert key in mlflow_envvars, f"mlflow: `mlflow server` reads no {key}"
            else:
                assert key in OTHER_IMAGE_VARIABLES.get(name, set()), f"{name}: who reads {key}?"


def test_airflow_components_agree(services):
    """One JWT secret, API secret key and Fernet key; the URLs name the services that serve them."""
    airflow = {n: resolved(s) for n, s in services.items()
               if s.get("command") and s["command"][0] == "airflow"}
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__DAGS_FOLDER"):
        values = {env.get(key) for env in airflow.values()}
        assert len(values) == 1 and None not in values, f"{key} differs across {sorted(airflow)}"
    env = next(iter(airflow.values()))
    assert env["AIRFLOW__CORE__EXECUTOR"] in ("CeleryExecutor", CELERY_EXECUTOR)

    api = next(n for n, s in services.items() if s.get("command", [])[:2] == ["airflow", "api-server"])
    cmd = services[api]["command"]
    port = int(cmd[cmd.index("--port") + 1]) if "--port" in cmd else 8080
    url = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (url.hostname, url.port, url.path) == (api, port, "/execution/")

    databases = set(re.findall(r"CREATE DATABASE (\w+)", (DOCKER / "postgres-init.sql").read_text()))
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        u = urlsplit(env[key])
        assert u.scheme.endswith("postgresql+psycopg2") and u.hostname == "postgres", key
        assert u.path.lstrip("/") in databases, f"{key}: database not created by postgres-init.sql"
    assert urlsplit(resolved(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"]).path \
        .lstrip("/") in databases
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"

    folder = env["AIRFLOW__CORE__DAGS_FOLDER"]
    assert re.search(rf"^COPY\s+dags/?\s+{re.escape(folder)}/?\s*$", DOCKERFILE.read_text(), re.M), \
        f"the Dockerfile does not copy dags/ to {folder}"
    manager = env["AIRFLOW__CORE__AUTH_MANAGER"].rsplit(".", 1)
    source = airflow_dir().parent / (manager[0].replace(".", "/") + ".py")
    assert f"class {manager[1]}" in source.read_text(), env["AIRFLOW__CORE__AUTH_MANAGER"]


def test_rankline_finds_mlflow_and_redis(services):
    env = resolved(services["airflow-worker"])
    mlflow = urlsplit(env["RANKLINE_MLFLOW_TRACKING_URI"])
    cmd = services["mlflow"]["command"]
    assert mlflow.hostname == "mlflow" and mlflow.port == int(cmd[cmd.index("--port") + 1])
    allowed = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert mlflow.netloc in allowed, "mlflow server would refuse the workers' Host header"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert env["RANKLINE_STORE_BACKEND"] == "redis" and urlsplit(env["RANKLINE_REDIS_URL"]).hostname \
        == "redis"
    assert urlsplit(env["RANKLINE_REDIS_URL"]).path != urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).path, \
        "the serving store and the Celery broker share a Redis database"


def test_commands_are_executables_of_the_image(services):
    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "rankline" in project
    for name, service in services.items():
        if not on_rankline_image(service):
            continue
        exe = service["command"][0]
        assert exe in IMAGE_EXECUTABLES and exe in scripts, f"{name}: the image has no {exe}"
        health = (service.get("healthcheck") or {}).get("test")
        if health:
            assert health[:2] == ["CMD", "python"], f"{name}: healthcheck needs curl? {health}"
    cli_config = (airflow_dir() / "cli" / "cli_config.py").read_text()
    for sub in ("api-server", "scheduler", "dag-processor", "triggerer", "db", "migrate"):
        assert f'name="{sub}"' in cli_config, f"airflow has no `{sub}` command"

    import typer

    from pipeline.cli import app

    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    options = {o for p in serve.params for o in p.opts}
    cmd = services["serving"]["command"]
    assert {a for a in cmd if a.startswith("--")} <= options
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_host_ports_bind_loopback_only(services):
    published = 0
    for name, service in services.items():
        for port in service.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: {port} is published beyond 127.0.0.1"
            published += 1
    assert published == 4  # Airflow's API server, MLflow, the serving API, Dask's dashboard
    assert not services["postgres"].get("ports") and not services["redis"].get("ports")


def test_healthchecks_gate_the_dependents(services):
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if dep in ("postgres", "redis"):
                assert spec["condition"] == "service_healthy", f"{name} -> {dep}"
            if dep == "airflow-init":
                assert spec["condition"] == "service_completed_successfully", name
    assert services["airflow-init"]["command"] == ["airflow", "db", "migrate"]


def test_secrets_come_from_the_env_file(compose, services):
    text = COMPOSE.read_text()
    refs = referenced(compose)
    example = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in
               ENV_EXAMPLE.read_text().splitlines() if "=" in line and not line.startswith("#")}
    assert set(refs) <= set(example), f"not in docker/.env.example: {set(refs) - set(example)}"
    required = {n for n, op in refs.items() if op == ":?"}
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
            "AIRFLOW_API_SECRET_KEY", "RANKLINE_API_KEY"} <= required
    for name in required:
        assert example[name] == "", f"docker/.env.example must not hold a value for {name}"
        assert f"set {name} in docker/.env" in text, name
    one_ref = re.compile(r"^\$\{(\w+):\?[^}]*\}$")
    marked = {n: f"from-env-{n}" for n in refs}  # each variable's value names it
    for sname, service in services.items():
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key):
                m = one_ref.match(value)
                assert m and m[1] in required, f"{sname}: {key} must be ${{VAR:?…}} from docker/.env"
            url = urlsplit(interpolate(value, marked))
            if url.scheme and url.netloc and "@" in url.netloc:
                secret = (url.password or "").removeprefix("from-env-")
                assert secret in required, f"{sname}: {key}: its password is not a ${{VAR:?…}}"
        for arg in service.get("command") or []:
            for var in referenced(str(arg)):
                assert var in required or not SECRET_NAME.search(var), f"{sname}: {arg}"
    assert ".env" in [line.strip() for line in (DOCKER / ".gitignore").read_text().splitlines()]


# --- the image -------------------------------------------------------------------------------

def test_dockerfile(services):
    text = DOCKERFILE.read_text()
    args = dockerfile_args()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d.split("==")[1].split(";")[0].strip() for d in deps if d.startswith("torch=="))
    assert args["TORCH_VERSION"] == torch_pin, "the Dockerfile's torch differs from pyproject.toml's"
    assert args["TORCH_VARIANT"] == "cpu"
    assert 'torch==${TORCH_VERSION}' in text and "download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert args["CELERY_PROVIDER_VERSION"] == CELERY_PROVIDER_VERSION, \
        "update CELERY_OPTIONS above to the provider version the image installs"
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert dockerfile_env()["RANKLINE_HOME"] == "/var/lib/rankline"
    for name in list(args) + list(dockerfile_env()):
        assert not SECRET_NAME.search(name) and "TOKEN" not in name, f"{name} baked into the image"
    assert re.search(r"pip install[^\n]*\s\.\s", text), "the image installs the project (pip install .)"


def test_dockerignore_keeps_state_and_secrets_out():
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "var", "mlruns", "docker/.env", "**/__pycache__",
            ".pytest_cache", ".ruff_cache"} <= ignored
    copied = re.findall(r"^COPY\s+(\S+)", DOCKERFILE.read_text(), re.M)
    assert not {c.rstrip("/") for c in copied} & ignored, "the Dockerfile copies an ignored path"


# --- compose validates it, where a compose binary exists -------------------------------------

def _compose_cmd() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(_compose_cmd() is None, reason="neither docker-compose nor `docker compose` "
                    "on PATH: compose.yaml checked as YAML only")
def test_compose_config_validates(tmp_path):
    cmd = _compose_cmd()
    env_file = tmp_path / "dummy.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in example_env().items()))
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refs = referenced(yaml.safe_load(COMPOSE.read_text()))
    clean = {k: v for k, v in os.environ.items() if k not in refs}
    base = [*cmd, "-f", str(COMPOSE), "--profile", "gpu"]
    ok = subprocess.run([*base, "--env-file", str(env_file), "config", "-q"], env=clean,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([*base, "--env-file", str(empty), "config", "-q"], env=clean,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "in docker/.env" in missing.stderr, missing.stderr
