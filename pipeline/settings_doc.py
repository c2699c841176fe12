"""The configuration reference (``docs/configuration.md``), generated from :class:`Settings`.

Every row comes from a field of :class:`pipeline.settings.Settings`: its environment variable,
what it accepts (type, bounds, pattern), its default and its ``description``. Nothing depends on
the machine or the environment, so the page renders the same everywhere; ``rankline docs config``
writes it and ``tests/unit/test_settings_doc.py`` fails when the committed page is stale.
"""

from __future__ import annotations

import datetime as dt
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from pipeline.settings import SECRET_FIELDS, URL_FIELDS, Settings, env_name
from serving.store import redact_url

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
"""Where the page lives in the repository."""
COMMAND = "rankline docs config"
STALE = f"docs/configuration.md is stale: run `{COMMAND}`"

INTRO = f"""\
# Configuration

Generated from `pipeline/settings.py` by `{COMMAND}`: do not edit by hand
(`tests/unit/test_settings_doc.py` fails when this page differs from the settings).

Every setting is an environment variable `RANKLINE_<NAME>` (names are case-insensitive), read
lazily by `pipeline/settings.py` and checked before any work: the CLI exits with code 2 and a DAG
task fails at once (no retries) with one line per problem naming the variable, the value given
and what is allowed, e.g. `RANKLINE_TOP_K=-1: must be an integer >= 1 and <= 1000 (Recommendations
published per user.)`. Combinations are checked too (e.g. `RANKLINE_CANDIDATES_PER_USER` must be
at least `RANKLINE_TOP_K`). An unknown `RANKLINE_*` variable is an error (`RANKLINE_TOPK: not a
rankline setting; did you mean RANKLINE_TOP_K?`); `RANKLINE_TEST_*` variables belong to the test
suite. Secrets (`RANKLINE_API_KEY`, passwords inside URLs) are shown as `***` in every message,
log line and repr.

Airflow's own settings are Airflow's environment variables: `rankline airflow-env` prints the
embedded ones, and any `AIRFLOW__…` variable you set yourself wins (e.g.
`AIRFLOW__DATABASE__SQL_ALCHEMY_CONN` for Postgres). Values for production:
[operating.md](operating.md#settings-for-production).
"""


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`"


def _text(text: str) -> str:
    """Prose safe in Markdown: ``<table>`` is not a tag, ``*.parquet`` no emphasis."""
    return text.replace("<", "&lt;").replace("*", "\\*")


def _bound(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and value >= 10_000 else str(value)


def allowed(name: str, info: FieldInfo) -> str:
    """What a field accepts, in words: ``integer, >= 1, <= 1000``; ``one of `a`, `b```."""
    ann: Any = info.annotation
    optional = get_origin(ann) in (Union, types.UnionType) and type(None) in get_args(ann)
    if optional:  # X | None and Optional[X] alike
        ann = next(a for a in get_args(ann) if a is not type(None))
    if get_origin(ann) is Literal:
        parts = ["one of " + ", ".join(_code(str(a)) for a in get_args(ann))]
    else:
        parts = [{bool: "`true` or `false`", int: "integer", float: "number",
                  dt.date: "date (YYYY-MM-DD)", Path: "path", str: "text"}.get(ann, str(ann))]
    for m in info.metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{op} {_bound(getattr(m, attr))}")
        if getattr(m, "min_length", None):
            parts.append("not empty")
        if getattr(m, "max_length", None):
            parts.append(f"at most {_bound(m.max_length)} characters")
        if getattr(m, "pattern", None):
            parts.append(f"matching {_code(m.pattern)}")
    if optional:
        parts.append("or unset")
    if name in SECRET_FIELDS:
        parts.append("a secret, shown as `***`")
    elif name in URL_FIELDS:
        parts.append("a password in it is shown as `***`")
    return ", ".join(parts)


def default(name: str, info: FieldInfo) -> str:
    """A field's default as stable text (a relative path stays relative: no machine's path)."""
    value = info.default
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return _code(str(value).lower())
    if isinstance(value, Path):
        return f"{_code(value.as_posix())} (relative to the working directory)"
    if isinstance(value, dt.date):
        return _code(value.isoformat())
    if name in SECRET_FIELDS:
        return "`***`"
    if name in URL_FIELDS:
        return _code(redact_url(value))
    return _code(str(value))


def render() -> str:
    """The whole page: the intro, then one row per setting in the order of ``Settings``."""
    rows = ["| variable | accepts | default | meaning |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        rows.append(f"| `{env_name(name)}` | {_cell(allowed(name, info))} | "
                    f"{_cell(default(name, info))} | {_cell(_text(info.description or ''))} |")
    return INTRO + "\n" + "\n".join(rows) + "\n"
