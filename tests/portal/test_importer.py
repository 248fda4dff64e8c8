"""``portal.importer``: ``mcpServers`` files from other clients become ``[servers.NAME]`` tables."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from portal.config import ServerSettings, load_settings
from portal.errors import ServersImportError
from portal.importer import import_servers, parse_mcp_servers, render_toml

EXISTING = """\
# Dockyard config, hand-written.
[portal]
public_url = "http://127.0.0.1:8000"  # loopback only

# the memory server
[servers.memory]
builtin = "memory"
"""


def write_json(tmp_path: Path, document: object, name: str = "claude_desktop_config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def imported(document: object) -> dict[str, ServerSettings]:
    return dict(parse_mcp_servers(json.dumps(document), source="servers.json"))


def import_error(source: Path, config: Path) -> ServersImportError:
    with pytest.raises(ServersImportError) as excinfo:
        import_servers(source, config)
    return excinfo.value


def test_the_claude_desktop_shape_is_imported() -> None:
    servers = imported(
        {
            "mcpServers": {
                "filesystem": {
                    "command": "npx",
                    "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"],
                    "env": {"LOG_LEVEL": "debug"},
                },
                "remote": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer x"}},
                "off": {"command": "uvx", "args": ["mcp-server-time"], "disabled": True},
            }
        }
    )
    assert servers == {
        "filesystem": ServerSettings(
            command="npx",
            args=["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"],
            env={"LOG_LEVEL": "debug"},
        ),
        "remote": ServerSettings(url="https://mcp.example.com/mcp", headers={"Authorization": "Bearer x"}),
        "off": ServerSettings(command="uvx", args=["mcp-server-time"], enabled=False),
    }


def test_the_vs_code_shape_is_imported_with_its_transport_types() -> None:
    servers = imported(
        {
            "inputs": [{"type": "promptString", "id": "token", "password": True}],
            "servers": {
                "local": {"type": "stdio", "command": "python", "args": ["-m", "server"], "cwd": "/srv"},
                "http": {"type": "http", "url": "https://mcp.example.com/mcp"},
                "events": {"type": "sse", "url": "https://mcp.example.com/sse"},
            },
        }
    )
    assert servers["local"] == ServerSettings(command="python", args=["-m", "server"], cwd=Path("/srv"))
    assert (servers["http"].url, servers["http"].transport) == ("https://mcp.example.com/mcp", "streamable-http")
    assert (servers["events"].url, servers["events"].transport) == ("https://mcp.example.com/sse", "sse")


def test_a_windsurf_server_url_is_imported() -> None:
    assert imported({"mcpServers": {"w": {"serverUrl": "https://w.example.com/mcp"}}}) == {
        "w": ServerSettings(url="https://w.example.com/mcp")
    }


def test_a_bare_map_of_servers_is_imported() -> None:
    assert imported({"time": {"command": "uvx", "args": ["mcp-server-time"]}, "r": {"url": "http://127.0.0.1:1"}}) == {
        "time": ServerSettings(command="uvx", args=["mcp-server-time"]),
        "r": ServerSettings(url="http://127.0.0.1:1"),
    }


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("my server", "my-server"),
        ("github.com/owner", "github-com-owner"),
        ("-leading-and-trailing-", "leading-and-trailing"),
        ("ünïcode", "n-code"),
        ("日本語", "server"),
        ("x" * 40, "x" * 32),
    ],
)
def test_names_with_unsafe_characters_become_config_names(raw: str, name: str) -> None:
    assert list(imported({"mcpServers": {raw: {"command": "x"}}})) == [name]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "servers.json: not valid JSON: "),
        ("[]", "servers.json: expected a JSON object at the top level"),
        ('{"mcpServers": []}', "servers.json: 'mcpServers' must be an object of servers"),
        ('{"mcpServers": {}}', "servers.json: the file lists no servers"),
        ('{"mcpServers": {"a": "npx"}}', "servers.json: server 'a' must be an object"),
        ('{"mcpServers": {"a": {"args": ["x"]}}}', "servers.json: server 'a' has neither 'command' nor 'url'"),
        ('{"something": {"else": 1}}', "servers.json: no 'mcpServers' or 'servers' object found"),
        ('{"mcpServers": {"a": {"url": "ftp://example.com"}}}', "servers.json: server 'a': 'url' must be http(s)"),
        ('{"mcpServers": {"a": {"command": "x", "args": "-y"}}}', "servers.json: server 'a': args: "),
    ],
    ids=[
        "invalid JSON",
        "not an object",
        "mcpServers not an object",
        "no servers",
        "entry not an object",
        "neither command nor url",
        "no known shape",
        "invalid url",
        "invalid field",
    ],
)
def test_an_invalid_document_is_a_servers_import_error_saying_what_is_wrong(document: str, message: str) -> None:
    with pytest.raises(ServersImportError) as excinfo:
        parse_mcp_servers(document, source="servers.json")
    assert str(excinfo.value).startswith(message)


def test_the_written_file_loads_with_load_settings(tmp_path: Path) -> None:
    document = {
        "mcpServers": {
            "filesystem": {"command": "npx", "args": ["-y", "server", 'with "quotes" and \\'], "env": {"K": "v"}},
            "remote": {"type": "sse", "url": "https://mcp.example.com/sse", "headers": {"X-Key": "é"}},
            "off": {"command": "x", "disabled": True},
        }
    }
    config = tmp_path / "dockyard.toml"
    assert import_servers(write_json(tmp_path, document), config) == ["filesystem", "remote", "off"]
    settings = load_settings(config, environ={})
    assert settings.servers == dict(parse_mcp_servers(json.dumps(document), source="x"))


def test_a_missing_config_is_created(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "dockyard.toml"
    import_servers(write_json(tmp_path, {"mcpServers": {"a": {"command": "x"}}}), config)
    assert load_settings(config, environ={}).servers == {"a": ServerSettings(command="x")}


def test_existing_text_and_comments_are_preserved(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text(EXISTING, encoding="utf-8")
    import_servers(write_json(tmp_path, {"mcpServers": {"a": {"command": "x"}}}), config)
    text = config.read_text(encoding="utf-8")
    assert text.startswith(EXISTING)
    assert text.endswith('[servers.a]\ncommand = "x"\n')
    assert set(load_settings(config, environ={}).servers) == {"memory", "a"}


def test_a_config_without_a_final_newline_still_gets_separate_tables(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('[servers.memory]\nbuiltin = "memory"', encoding="utf-8")
    import_servers(write_json(tmp_path, {"mcpServers": {"a": {"command": "x"}}}), config)
    assert set(load_settings(config, environ={}).servers) == {"memory", "a"}


def test_the_config_keeps_its_file_mode(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text(EXISTING, encoding="utf-8")
    config.chmod(0o640)
    import_servers(write_json(tmp_path, {"mcpServers": {"a": {"command": "x"}}}), config)
    assert config.stat().st_mode & 0o777 == 0o640


def test_a_name_already_in_the_config_is_refused_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text(EXISTING, encoding="utf-8")
    source = write_json(tmp_path, {"mcpServers": {"memory": {"command": "x"}, "fresh": {"command": "y"}}})
    error = import_error(source, config)
    assert str(error) == f"{config}: already configures memory; remove them or rename in {source}"


@pytest.mark.parametrize(
    ("document", "existing"),
    [
        ("{not json", EXISTING),
        (json.dumps({"mcpServers": {"a": {"args": []}}}), EXISTING),
        (json.dumps({"mcpServers": {"ok": {"command": "x"}, "bad": {"url": "ftp://x"}}}), EXISTING),
        (json.dumps({"mcpServers": {"memory": {"command": "x"}}}), EXISTING),
        (json.dumps({"mcpServers": {"a": {"command": "x"}}}), EXISTING + "[broken\n"),
    ],
    ids=["invalid JSON", "neither command nor url", "one invalid entry", "clash", "config not TOML"],
)
def test_the_config_is_untouched_when_import_fails(tmp_path: Path, document: str, existing: str) -> None:
    source = tmp_path / "servers.json"
    source.write_text(document, encoding="utf-8")
    config = tmp_path / "dockyard.toml"
    config.write_text(existing, encoding="utf-8")
    before = sorted(os.listdir(tmp_path))
    import_error(source, config)
    assert config.read_text(encoding="utf-8") == existing
    assert sorted(os.listdir(tmp_path)) == before  # no temporary file left behind


def test_a_missing_source_is_a_servers_import_error(tmp_path: Path) -> None:
    error = import_error(tmp_path / "nope.json", tmp_path / "dockyard.toml")
    assert str(error).startswith(f"{tmp_path / 'nope.json'}: cannot read: ")
    assert not (tmp_path / "dockyard.toml").exists()


def test_render_toml_writes_only_what_differs_from_the_defaults() -> None:
    assert render_toml([("a", ServerSettings(command="x")), ("b", ServerSettings(url="https://h/mcp"))]) == (
        '[servers.a]\ncommand = "x"\n\n[servers.b]\nurl = "https://h/mcp"\n'
    )


@pytest.mark.xfail(
    strict=True,
    reason="BUG: imported names are only cleaned of unsafe characters; a name starting with '_' (or '_' after "
    "cleaning) is written, but the config requires a letter or digit first, so the written file no longer loads",
)
def test_an_imported_name_is_one_the_config_accepts(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    [name] = import_servers(write_json(tmp_path, {"mcpServers": {"_private": {"command": "x"}}}), config)
    assert name in load_settings(config, environ={}).servers


@pytest.mark.xfail(
    strict=True,
    raises=tomllib.TOMLDecodeError,
    reason="BUG: two source names that clean to the same config name ('a b' and 'a.b' both become 'a-b') "
    "produce a duplicate [servers.a-b] table; the final tomllib check raises a bare TOMLDecodeError instead of "
    "a ServersImportError (the CLI prints a traceback), and neither name is renamed",
)
def test_two_names_that_clean_alike_are_both_imported_or_clearly_refused(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    source = write_json(tmp_path, {"mcpServers": {"a b": {"command": "x"}, "a.b": {"command": "y"}}})
    try:
        names = import_servers(source, config)
    except ServersImportError:
        return
    assert len(set(names)) == 2


@pytest.mark.xfail(
    strict=True,
    reason="BUG: values are written without escaping '$', but load_settings expands ${VAR} and $$ in server "
    "fields: an imported '${VAR}' makes the file fail to load when VAR is unset, and '$$' silently becomes '$'",
)
def test_dollar_signs_in_imported_values_are_kept_literally(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    args = ["--price", "$$5", "--template", "${NOT_SET}"]
    import_servers(write_json(tmp_path, {"mcpServers": {"a": {"command": "x", "args": args}}}), config)
    assert load_settings(config, environ={}).servers["a"].args == args


@pytest.mark.xfail(
    strict=True,
    raises=tomllib.TOMLDecodeError,
    reason="BUG: render_toml writes keys with json.dumps (ensure_ascii), whose surrogate-pair escapes TOML "
    "refuses, and values with raw control characters such as DEL that TOML basic strings forbid; the final "
    "tomllib check then raises a bare TOMLDecodeError instead of writing a valid file or a ServersImportError",
)
@pytest.mark.parametrize(
    "entry",
    [{"command": "x", "env": {"EMOJI_\U0001f600": "v"}}, {"command": "x", "args": ["a\x7fb"]}],
    ids=["astral character in a key", "DEL in a value"],
)
def test_any_json_string_survives_the_round_trip_through_toml(tmp_path: Path, entry: dict[str, object]) -> None:
    config = tmp_path / "dockyard.toml"
    import_servers(write_json(tmp_path, {"mcpServers": {"a": entry}}), config)
    assert load_settings(config, environ={}).servers["a"] == ServerSettings.model_validate(entry)
