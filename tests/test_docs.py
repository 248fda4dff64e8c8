"""The configuration shown in the README and the example file is valid, so the docs cannot rot."""

import re
from pathlib import Path

import pytest

from portal.cli import main
from portal.config import load_settings, settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_config_loads_and_documents_every_server_key(tmp_path: Path) -> None:
    settings = load_settings(ROOT / "dockyard.example.toml", environ={})
    assert settings.servers["everything"].kind == "stdio"
    text = (ROOT / "dockyard.example.toml").read_text()
    from portal.config import PortalSettings, ServerSettings

    for field in [*ServerSettings.model_fields, *PortalSettings.model_fields]:
        assert re.search(rf"\b{field}\b", text), f"dockyard.example.toml does not document {field!r}"


def test_every_toml_block_in_the_readme_is_a_valid_configuration(tmp_path: Path) -> None:
    import tomllib

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    assert blocks
    for block in blocks:
        raw = tomllib.loads(block)
        environ = {"DOCS_TOKEN": "t", "CI_BOT_SECRET": "s"}
        settings = settings_from_mapping(raw, source="README.md", base_dir=tmp_path, environ=environ)
        assert settings.servers


def test_every_command_in_the_readme_table_exists(capsys: object) -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\| `dockyard ([a-z]+(?: [a-z]+)?)", readme, flags=re.M)
    assert {"serve", "servers", "servers import", "tools pending", "tools accept"} <= set(commands)
    for command in commands:
        try:
            main([*command.split(), "--help"])
        except SystemExit as exit:
            assert exit.code == 0, command


def test_built_ins_enabled_by_default_join_every_configuration_unless_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import servers

    monkeypatch.setattr(servers, "BUILTINS", {"clock": "tests.servers.interactive:server"})
    monkeypatch.setattr(servers, "DEFAULT_ENABLED", ("clock",))
    defaults = settings_from_mapping({}, source="<t>", base_dir=tmp_path, environ={})
    assert defaults.servers["clock"].builtin == "clock"
    off = {"servers": {"clock": {"builtin": "clock", "enabled": False}}}
    assert not settings_from_mapping(off, source="<t>", base_dir=tmp_path, environ={}).servers["clock"].enabled
