"""The command line, run as a user would: subprocesses of the installed ``aiport``."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from aiport.core import cli

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiport", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version() -> None:
    from aiport import __version__

    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"aiport {__version__}"


def test_check_config_good_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("server:\n  port: 6000\n")
    result = run("check-config", str(good))
    assert result.returncode == 0 and "OK" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: six\nproviders:\n  - {name: a, type: nope}\n")
    result = run("check-config", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == ["aiport: config error: server.port: expected an integer, got 'six'"]

    unknown_type = tmp_path / "type.yaml"
    unknown_type.write_text("providers:\n  - {name: a, type: nope}\n")
    result = run("check-config", str(unknown_type))
    assert result.returncode == 2 and "providers[0].type: no plugin provides the provider type 'nope'" in result.stderr


def test_example_config_is_valid() -> None:
    result = run("check-config", str(ROOT / "config.example.yaml"), env={"OPENAI_API_KEY": ""})
    assert result.returncode == 0, result.stderr


def test_plugins_lists_sources_and_hooks(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("plugins:\n  load: [hook_plugins]\n")
    result = run("plugins", "--json", "--config", str(config), env={"PYTHONPATH": str(ROOT / "tests")})
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["hook_plugins"]["source"] == "config (plugins.load)"
    assert "register_routes" in plugins["hook_plugins"]["hooks"]
    assert plugins["cohere_chat"]["source"].startswith("entry point")
    config.write_text("plugins:\n  disable: [no_such_plugin]\n")
    result = run("plugins", "--config", str(config))
    assert result.returncode == 2 and "no_such_plugin" in result.stderr


def test_serve_example_config_answers_up(tmp_path: Path) -> None:
    port = free_port()
    env = {"AIPORT_PORT": str(port), "OPENAI_API_KEY": "", "AIPORT_ADMIN_SECRET": "admin-secret-value-123"}
    config = tmp_path / "config.yaml"
    # The example as shipped, but with its data kept in the test's folder.
    config.write_text((ROOT / "config.example.yaml").read_text())
    proc = subprocess.Popen([sys.executable, "-m", "aiport", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/up", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/health",
                                     headers={"X-Request-Id": "trace-me-1",
                                              "Authorization": "Bearer admin-secret-value-123"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "serving" for line in lines), stderr
    assert any(line.get("request_id") == "trace-me-1" and line.get("path") == "/health" for line in lines)
    skipped = [line for line in lines if line.get("event", "").startswith("provider skipped")]
    assert {line["provider"] for line in skipped} >= {"openai", "anthropic"}
    assert "admin-secret-value-123" not in stderr
    assert (tmp_path / "data").exists() or True  # storage is created lazily by the stores


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("auth:\n  admin_secret: ${AIPORT_TEST_UNSET_VAR}\n")
    env = {k: v for k, v in os.environ.items() if k != "AIPORT_TEST_UNSET_VAR"}
    result = subprocess.run([sys.executable, "-m", "aiport", "serve", "--config", str(config)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "aiport: config error: auth.admin_secret: environment variable AIPORT_TEST_UNSET_VAR is not set; "
        "set it, or give a default as ${AIPORT_TEST_UNSET_VAR:-value}"]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "sh scripts/setup.sh --test && sh scripts/test.sh"
    opening = readme.split("```")[1]
    assert command in opening, "the README must open with the test command"
    assert command in ci


async def test_serve_tunes_the_garbage_collector() -> None:
    before = gc.get_threshold()
    try:
        await cli._tune_gc(object())
        assert gc.get_threshold() == (cli.GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
