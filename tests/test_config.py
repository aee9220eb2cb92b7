"""Config: YAML -> ${ENV} substitution -> attrs, with errors that name the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiport.core.config import Config, Secret, load_config, parse_config
from aiport.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def problems(data: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ=environ or {})
    return info.value.problems


def test_defaults_are_the_embedded_config() -> None:
    config = parse_config(None, environ={})
    assert config == Config(base_dir=".")
    assert config.storage.job_store == "sqlite" and config.storage.artifact_store == "local"
    assert config.jobs.retries == 2 and config.jobs.timeout == 1200


def test_unknown_key_names_its_path_and_a_fix() -> None:
    assert problems({"server": {"prot": 8080}}) == ["server.prot: unknown key; did you mean 'port'?"]
    assert problems({"sever": {}})[0].startswith("sever: unknown key; did you mean 'server'?")


def test_wrong_type_names_its_path() -> None:
    data = {"providers": [{"name": "a", "type": "x"}, {"name": "b", "type": "x"},
                          {"name": "c", "type": "x", "concurrency": "four"}]}
    assert problems(data) == ["providers[2].concurrency: expected an integer, got 'four'"]


def test_all_problems_are_reported_at_once() -> None:
    found = problems({"server": {"port": "x", "host": 5}, "jobs": {"retries": -1}})
    assert "server.port: expected an integer, got 'x'" in found
    assert "server.host: expected a string, got 5 (quote it in YAML)" in found


def test_ranges_and_choices() -> None:
    assert problems({"server": {"port": 70000}}) == ["server.port: must be a TCP port (0-65535), got 70000"]
    assert problems({"jobs": {"retries": -1}}) == ["jobs.retries: must be 0 or more, got -1"]
    assert problems({"logging": {"level": "loud"}}) == [
        "logging.level: expected one of 'debug', 'info', 'warning', 'error', got 'loud'"]


def test_missing_env_var_without_default_names_the_key() -> None:
    assert problems({"auth": {"admin_secret": "${AIPORT_SECRET}"}}) == [
        "auth.admin_secret: environment variable AIPORT_SECRET is not set; "
        "set it, or give a default as ${AIPORT_SECRET:-value}"]


def test_env_substitution_with_defaults_and_escapes() -> None:
    config = parse_config({
        "server": {"port": "${PORT:-7000}", "host": "${HOST}", "public_base_url": "https://$${literal}"},
        "auth": {"admin_secret": "${SECRET}"},
        "jobs": {"timeout": "${TIMEOUT:-20m}"},
    }, environ={"HOST": "0.0.0.0", "SECRET": "s3cret-value"})
    assert config.server.port == 7000 and config.server.host == "0.0.0.0"
    assert config.server.public_base_url == "https://${literal}"
    assert config.auth.admin_secret == Secret("s3cret-value")
    assert config.jobs.timeout == 1200.0


def test_sizes_and_durations() -> None:
    config = parse_config({"server": {"max_upload_size": "5MiB"},
                           "jobs": {"retry_backoff": "500ms", "sync_timeout_chat": "2m"}}, environ={})
    assert config.server.max_upload_size == 5 * 1024 * 1024
    assert config.jobs.retry_backoff == 0.5 and config.jobs.sync_timeout_chat == 120
    assert problems({"server": {"max_upload_size": "lots"}})[0].startswith("server.max_upload_size: expected a size")


def test_secrets_never_show_in_repr_or_errors() -> None:
    config = parse_config({"auth": {"admin_secret": "hunter2-very-secret"}}, environ={})
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.auth.admin_secret)
    assert config.auth.admin_secret is not None
    assert config.auth.admin_secret.reveal() == "hunter2-very-secret"
    found = problems({"auth": {"admin_secret": ["hunter2-in-a-list"]}})
    assert found and all("hunter2" not in p for p in found)


def test_provider_extra_keys_become_options_and_models_accept_both_forms() -> None:
    config = parse_config({"providers": [{"name": "o", "type": "ollama", "keep_alive": "5m",
                                          "models": ["llama3.1:8b", {"model": "qwen", "api_model": "qwen2.5"}]}]},
                          environ={})
    (p,) = config.providers
    assert p.options == {"keep_alive": "5m"}
    assert [(m.model, m.api_model) for m in p.models] == [("llama3.1:8b", None), ("qwen", "qwen2.5")]


def test_duplicate_provider_names() -> None:
    assert problems({"providers": [{"name": "a", "type": "x"}, {"name": "a", "type": "y"}]}) == [
        "providers: the name 'a' is used twice; provider names must be unique"]


def test_missing_required_provider_key() -> None:
    assert problems({"providers": [{"name": "a"}]}) == ["providers[0].type: required key is missing"]


def test_yaml_errors_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "conf" / "aiport.yaml"
    f.parent.mkdir()
    f.write_text("storage:\n  database_path: db/aiport.db\n")
    config = load_config(f, environ={})
    assert config.resolve_path(config.storage.database_path) == f.parent / "db" / "aiport.db"


def test_example_config_loads_with_no_secrets_set() -> None:
    config = load_config(ROOT / "config.example.yaml", environ={})
    assert config.auth.admin_secret is None


def test_example_config_documents_every_key() -> None:
    """Every config key, at every level, appears in config.example.yaml."""
    import typing

    import attrs
    from aiport.core import config as cfg

    text = (ROOT / "config.example.yaml").read_text()
    missing: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for a in attrs.fields(cls):
            if a.name in ("base_dir", "options"):
                continue
            if f"{a.name}:" not in text:
                missing.append(prefix + a.name)
            tp = hints[a.name]
            if isinstance(tp, type) and attrs.has(tp):
                walk(tp, f"{prefix}{a.name}.")

    walk(cfg.Config, "")
    walk(cfg.ProviderConfig, "providers[].")
    assert not missing, f"keys missing from config.example.yaml: {missing}"
