"""The configuration reference is generated from the settings and committed up to date."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from pipeline import settings_doc
from pipeline.cli import app
from pipeline.settings import Settings, env_name


def test_the_committed_page_is_what_the_settings_render() -> None:
    committed = (settings_doc.DOC_PATH.read_text(encoding="utf-8")
                 if settings_doc.DOC_PATH.is_file() else "")
    assert committed == settings_doc.render(), settings_doc.STALE


def test_every_setting_has_a_row_with_its_description() -> None:
    page = settings_doc.render()
    rows = {m.group(1): line for line in page.splitlines()
            if (m := re.match(r"\| `(RANKLINE_[A-Z0-9_]+)` \|", line))}
    assert list(rows) == [env_name(n) for n in Settings.model_fields]
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no description="
        assert env_name(name) in rows
        assert rows[env_name(name)].count(" | ") == 3, rows[env_name(name)]
        assert "typing." not in rows[env_name(name)], f"{name}: settings_doc.allowed cannot word its type"


def test_defaults_render_without_machine_paths(monkeypatch, tmp_path) -> None:
    before = settings_doc.render()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANKLINE_HOME", str(tmp_path / "elsewhere"))
    assert settings_doc.render() == before
    assert str(tmp_path) not in before
    assert "| `RANKLINE_HOME` | path | `var` (relative to the working directory) |" in before


def test_secrets_are_not_shown() -> None:
    row = next(line for line in settings_doc.render().splitlines()
               if line.startswith("| `RANKLINE_API_KEY`"))
    assert "`***`" in row


def test_check_fails_on_a_stale_page_and_names_the_command(monkeypatch, tmp_path) -> None:
    page = tmp_path / "configuration.md"
    monkeypatch.setattr(settings_doc, "DOC_PATH", page)
    runner = CliRunner()
    stale = runner.invoke(app, ["docs", "config", "--check"])
    assert stale.exit_code == 1
    assert "docs/configuration.md is stale: run `rankline docs config`" in stale.output
    assert runner.invoke(app, ["docs", "config"]).exit_code == 0
    assert page.read_text(encoding="utf-8") == settings_doc.render()
    assert runner.invoke(app, ["docs", "config", "--check"]).exit_code == 0
