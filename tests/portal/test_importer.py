"""``portal.importer``: ``mcpServers`` files from other clients become ``[servers.NAME]`` tables."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.config import ServerSettings, load_settings, settings_from_mapping
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


def import_error(source: Path, config: Path, *, environ: dict[str, str] | None = None) -> ServersImportError:
    with pytest.raises(ServersImportError) as excinfo:
        import_servers(source, config, environ=environ)
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


def test_render_toml_escapes_dollar_signs_so_they_stay_literal() -> None:
    assert render_toml([("a", ServerSettings(command="$x", env={"$K": "${V}"}, prefix="p"))]) == (
        '[servers.a]\ncommand = "$$x"\nenv = { "$K" = "$${V}" }\nprefix = "p"\n'
    )


@pytest.mark.parametrize(
    ("raw", "name"),
    [("_private", "private"), ("_", "server"), ("__x__", "x__"), ("-_-a", "a"), ("a" * 31 + " b", "a" * 31)],
)
def test_an_imported_name_is_one_the_config_accepts(tmp_path: Path, raw: str, name: str) -> None:
    config = tmp_path / "dockyard.toml"
    assert import_servers(write_json(tmp_path, {"mcpServers": {raw: {"command": "x"}}}), config) == [name]
    assert name in load_settings(config, environ={}).servers


def test_two_names_that_clean_alike_get_distinct_names_whatever_their_order(tmp_path: Path) -> None:
    for order in (["a b", "a.b", "a-b"], ["a-b", "a.b", "a b"]):
        document = {"mcpServers": {raw: {"command": raw} for raw in order}}
        config = tmp_path / f"{'-'.join(order)}.toml"
        names = dict(zip(order, import_servers(write_json(tmp_path, document), config), strict=True))
        # A name that is already valid keeps it; the others take the next free numbered form, in sorted order.
        assert names == {"a-b": "a-b", "a b": "a-b-2", "a.b": "a-b-3"}
        servers = load_settings(config, environ={}).servers
        assert {name: servers[name].command for name in names.values()} == {v: k for k, v in names.items()}


def test_a_renamed_server_never_takes_a_name_the_config_already_has(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('[servers.a-b-2]\ncommand = "old"\n', encoding="utf-8")
    source = write_json(tmp_path, {"mcpServers": {"a b": {"command": "x"}, "a.b": {"command": "y"}}})
    assert import_servers(source, config) == ["a-b", "a-b-3"]
    assert set(load_settings(config, environ={}).servers) == {"a-b", "a-b-2", "a-b-3"}


def test_a_long_name_that_needs_a_number_stays_within_the_name_length() -> None:
    names = [
        name for name, _ in imported_list({"mcpServers": {"x" * 40: {"command": "a"}, "x" * 41: {"command": "b"}}})
    ]
    assert names == ["x" * 32, "x" * 30 + "-2"]


def imported_list(document: object) -> list[tuple[str, ServerSettings]]:
    return parse_mcp_servers(json.dumps(document), source="servers.json", environ={})


def test_dollar_signs_in_imported_values_are_kept_literally(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    args = ["--price", "$$5", "--template", "${NOT_SET}", "$"]
    entry = {"command": "$x", "args": args, "env": {"K": "${A:-b}"}, "cwd": "/srv/$HOME"}
    import_servers(write_json(tmp_path, {"mcpServers": {"a": entry}}), config, environ={})
    assert load_settings(config, environ={"A": "set", "HOME": "/root"}).servers["a"] == ServerSettings(
        command="$x", args=args, env={"K": "${A:-b}"}, cwd=Path("/srv/$HOME")
    )


def test_a_url_server_keeps_dollar_signs_in_its_url_and_headers(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    entry = {"url": "https://h.example/$path", "headers": {"X-Price": "$$5"}}
    import_servers(write_json(tmp_path, {"mcpServers": {"a": entry}}), config, environ={})
    assert load_settings(config, environ={}).servers["a"] == ServerSettings.model_validate(entry)


def test_vs_code_env_references_become_config_references(tmp_path: Path) -> None:
    """U3: a secret the source kept in the environment stays there; the config only names the variable."""
    config = tmp_path / "dockyard.toml"
    document = {
        "servers": {
            "api": {"type": "http", "url": "${env:API_BASE}/mcp", "headers": {"Authorization": "Bearer ${env:TOKEN}"}}
        }
    }
    environ = {"API_BASE": "https://api.example.com", "TOKEN": "t0k3n"}
    import_servers(write_json(tmp_path, document), config, environ=environ)
    text = config.read_text(encoding="utf-8")
    assert 'url = "${API_BASE}/mcp"' in text
    assert "t0k3n" not in text
    server = load_settings(config, environ=environ).servers["api"]
    assert (server.url, server.headers) == ("https://api.example.com/mcp", {"Authorization": "Bearer t0k3n"})


def test_an_env_reference_to_an_unset_variable_is_refused_naming_the_server_and_key(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    source = write_json(tmp_path, {"mcpServers": {"api": {"command": "x", "env": {"K": "${env:UNSET_VAR}"}}}})
    error = import_error(source, config, environ={})
    assert str(error) == (
        f"{source}: server 'api': env.K: environment variable 'UNSET_VAR' is not set (use ${{UNSET_VAR:-default}})"
    )
    assert not config.exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"command": "x", "env": {"TOKEN": "${input:api-token}"}},
            "server 'my api': env.TOKEN: '${input:api-token}' asks the user for a value, which the portal cannot do; "
            "put the value in an environment variable and use ${env:NAME} instead",
        ),
        (
            {"url": "https://h/mcp", "headers": {"A": "Bearer ${input:t}"}},
            "server 'my api': headers.A: '${input:t}' asks the user for a value",
        ),
        ({"command": "x", "args": ["${env:not-a-name}"]}, "server 'my api': args[0]: '${env:not-a-name}' is not a"),
        (
            {"command": "x", "url": "https://h/mcp"},
            "server 'my api' has both 'command' and 'url'; remove one of them and import again",
        ),
        ({"command": "x", "serverUrl": "https://h/mcp"}, "server 'my api' has both 'command' and 'url'"),
        ({"command": "x", "args": ["a\ud800b"]}, "server 'my api': args[0]: the value holds a lone surrogate, which"),
        ({"command": "x", "env": {"K\udfff": "v"}}, "server 'my api': env: the key 'K\\udfff' holds a lone surrogate"),
    ],
    ids=[
        "input in env",
        "input in a header",
        "env reference that is no name",
        "command and url",
        "serverUrl",
        "lone surrogate in a value",
        "lone surrogate in a key",
    ],
)
def test_an_entry_the_portal_could_not_use_as_written_is_refused_clearly(
    tmp_path: Path, entry: dict[str, object], message: str
) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text(EXISTING, encoding="utf-8")
    source = write_json(tmp_path, {"mcpServers": {"my api": entry}})
    assert str(import_error(source, config)).startswith(f"{source}: {message}")
    assert config.read_text(encoding="utf-8") == EXISTING


@pytest.mark.parametrize(
    "entry",
    [
        {"command": "x", "env": {"EMOJI_\U0001f600": "v"}},
        {"command": "x", "args": ["a\x7fb"]},
        {"command": "x", "args": ["".join(map(chr, range(32))) + '"\\\'"']},
        {"url": "https://h/mcp", "headers": {'We ird "key"\n': "\U0001f600"}},
    ],
    ids=["astral character in a key", "DEL in a value", "every control character", "odd header key"],
)
def test_any_json_string_survives_the_round_trip_through_toml(tmp_path: Path, entry: dict[str, object]) -> None:
    config = tmp_path / "dockyard.toml"
    import_servers(write_json(tmp_path, {"mcpServers": {"a": entry}}), config)
    assert load_settings(config, environ={}).servers["a"] == ServerSettings.model_validate(entry)


@given(
    st.text(min_size=1),
    st.lists(st.text()),
    st.dictionaries(st.text(), st.text(), max_size=3),
)
def test_render_toml_writes_settings_the_portal_reads_back_unchanged(
    command: str, args: list[str], env: dict[str, str]
) -> None:
    server = ServerSettings(command=command, args=args, env=env)
    text = render_toml([("a", server)])
    settings = settings_from_mapping(tomllib.loads(text), source="<test>", base_dir=Path("/"), environ={})
    assert settings.servers == {"a": server}


def test_a_config_that_does_not_load_is_refused_before_importing(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('[servers.a]\ncommand = "${UNSET_VAR}"\n', encoding="utf-8")
    error = import_error(write_json(tmp_path, {"mcpServers": {"b": {"command": "x"}}}), config, environ={})
    assert str(error) == (
        f"{config}: does not load, fix it before importing: servers.a.command: environment variable 'UNSET_VAR' "
        "is not set (use ${UNSET_VAR:-default})"
    )
