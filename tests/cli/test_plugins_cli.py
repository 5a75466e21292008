"""``lightly-derm plugins``: the installed console script, table and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightly_derm.cli import main

SCRIPT = Path(sys.executable).with_name("lightly-derm")


def run_cli(
    *args: str, extra_path: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("LIGHTLY_DERM_")
    }
    environment.update(env)
    if extra_path is not None:
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(extra_path)] + [p for p in [environment.get("PYTHONPATH")] if p]
        )
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


@pytest.mark.skipif(
    not SCRIPT.exists(), reason="the lightly-derm console script is not installed"
)
@pytest.mark.slow
def test_console_script_json_lists_installed_plugin(plugin_template_site: Path) -> None:
    result = run_cli("plugins", "--json", extra_path=plugin_template_site)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(
        set(row) == {"kind", "name", "distribution", "version", "description"}
        for row in rows
    )
    row = next(r for r in rows if r["name"] == "group_center")
    assert row == {
        "kind": "loss",
        "name": "group_center",
        "distribution": "lightly-derm-plugin-template",
        "version": "0.1.0",
        "description": "Pulls each L2-normalised embedding towards the mean of its group.",
    }
    blocked = run_cli(
        "plugins",
        "--json",
        extra_path=plugin_template_site,
        LIGHTLY_DERM_BLOCK_PLUGINS="plugin_template",
    )
    assert "group_center" not in {r["name"] for r in json.loads(blocked.stdout)}


@pytest.mark.skipif(
    not SCRIPT.exists(), reason="the lightly-derm console script is not installed"
)
@pytest.mark.slow
def test_console_script_table(plugin_template_site: Path) -> None:
    result = run_cli("plugins", "--kind", "loss", extra_path=plugin_template_site)
    assert result.returncode == 0, result.stderr
    header, rule, *rows = result.stdout.splitlines()
    assert header.split() == ["kind", "name", "distribution", "version", "description"]
    assert set(rule.replace(" ", "")) == {"-"}
    line = next(r for r in rows if "group_center" in r)
    assert line.split()[:4] == [
        "loss",
        "group_center",
        "lightly-derm-plugin-template",
        "0.1.0",
    ]
    assert all(r.split()[0] == "loss" for r in rows)


def test_broken_plugin_reported_on_stderr(make_dist, capsys, clean_plugin_env) -> None:
    import lightly_derm

    make_dist(
        "broken-x",
        "9.9",
        {"broken_x": "broken_x_mod"},
        {"broken_x_mod": "raise RuntimeError('kaput')"},
    )
    lightly_derm.registry.reload()
    try:
        assert main(["plugins", "--json"]) == 0
    finally:
        lightly_derm.registry.reload()
    captured = capsys.readouterr()
    failed = [r for r in json.loads(captured.out) if r.get("error")]
    assert [(r["name"], r["distribution"]) for r in failed] == [
        ("broken_x", "broken-x")
    ]
    assert "kaput" in failed[0]["error"]
    line = "warning: lightly-derm plugin 'broken_x' (broken-x 9.9) failed to load"
    lines = [entry for entry in captured.err.splitlines() if entry.strip()]
    assert len(lines) == 1 and line in lines[0] and "kaput" in lines[0], captured.err


def test_broken_plugin_once_in_a_job(make_dist, capsys, clean_plugin_env) -> None:
    import lightly_derm

    make_dist(
        "broken-y",
        "9.9",
        {"broken_y": "broken_y_mod"},
        {"broken_y_mod": "raise RuntimeError('kaput')"},
    )
    lightly_derm.registry.reload()
    try:
        assert main(["pretrain", "--print-config"]) == 0
    finally:
        lightly_derm.registry.reload()
    err = capsys.readouterr().err
    lines = [entry for entry in err.splitlines() if "broken_y" in entry]
    assert len(lines) == 1 and lines[0].startswith("lightly-derm: warning: "), err


def test_a_block_list_entry_matching_nothing_warns(
    capsys, clean_plugin_env, monkeypatch
) -> None:
    import lightly_derm

    monkeypatch.setenv("LIGHTLY_DERM_BLOCK_PLUGINS", "brokn")
    lightly_derm.registry.reload()
    try:
        assert main(["plugins", "--kind", "loss"]) == 0
    finally:
        lightly_derm.registry.reload()
    err = capsys.readouterr().err
    assert "LIGHTLY_DERM_BLOCK_PLUGINS: 'brokn' matches no lightly-derm plugin" in err


def test_bad_arguments_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["plugins", "--kind", "losses"])
    assert excinfo.value.code == 2
    assert "invalid choice: 'losses'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["no-such-command"])
