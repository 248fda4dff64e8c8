"""``portal.config``: defaults, every kind of bad input, ``${VAR}`` expansion, paths, overrides."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from portal.config import Settings, expand_env, is_loopback_host, load_settings
from portal.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "dockyard.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={} if environ is None else environ)
    return excinfo.value


def test_defaults_load_with_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, environ={})
    assert settings.source == "<defaults>"
    assert settings.portal.public_url == "http://127.0.0.1:8000"
    assert (settings.portal.bind_host, settings.portal.bind_port) == ("127.0.0.1", 8000)
    assert settings.portal.data_dir == tmp_path / ".dockyard"
    assert settings.database_url == f"sqlite:///{tmp_path / '.dockyard' / 'dockyard.db'}"
    assert settings.auth.mode == "oauth"  # OAuth unless a config says [auth] mode = "none"
    assert settings.servers == {}


def test_an_empty_file_gives_the_defaults_with_paths_next_to_it(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.source == str(tmp_path / "dockyard.toml")
    assert settings.portal.data_dir == tmp_path / ".dockyard"
    assert settings.servers == {}


def test_a_full_file_loads_every_kind_of_server(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [portal]
        public_url = "https://portal.example.com/"
        max_stdio_children = 4

        [servers.files]
        command = "npx"
        args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv"]
        env = { LOG = "debug" }

        [servers.remote]
        url = "https://mcp.example.com/mcp"
        headers = { Authorization = "Bearer ${TOKEN}" }
        transport = "sse"
        prefix = "rem"

        [servers.mine]
        module = "my_pkg.server:app"
        prefix = false
        enabled = false

        [servers.memory]
        builtin = "memory"
        """,
    )
    settings = load_settings(path, environ={"TOKEN": "t0k"})
    assert settings.portal.public_url == "https://portal.example.com"
    assert settings.portal.bind_port == 443
    assert {name: s.kind for name, s in settings.servers.items()} == {
        "files": "stdio",
        "remote": "http",
        "mine": "inprocess",
        "memory": "inprocess",
    }
    assert settings.servers["remote"].headers == {"Authorization": "Bearer t0k"}
    assert settings.servers["remote"].transport == "sse"
    assert settings.servers["mine"].prefix is False
    assert settings.servers["mine"].enabled is False


BAD_INPUTS = {
    "unknown key in portal": ("[portal]\nbogus = 1\n", "portal.bogus", "unknown key"),
    "unknown top-level table": ("[portl]\npublic_url = 'http://127.0.0.1:1'\n", "portl", "unknown key"),
    "unknown key in a server": ("[servers.a]\ncommand = 'x'\nbogus = 1\n", "servers.a.bogus", "unknown key"),
    "two kinds in one server": (
        "[servers.a]\ncommand = 'x'\nurl = 'https://example.com/mcp'\n",
        "servers.a",
        "needs exactly one of 'command', 'url', 'builtin' or 'module' (found command, url)",
    ),
    "no kind at all": ("[servers.a]\nargs = ['x']\n", "servers.a", "(found none of them)"),
    "server URL that is not http(s)": (
        "[servers.a]\nurl = 'ftp://example.com/mcp'\n",
        "servers.a",
        "'url' must be http(s), got 'ftp://example.com/mcp'",
    ),
    "public_url without a scheme": (
        "[portal]\npublic_url = 'example.com:8000'\n",
        "portal.public_url",
        "must be an http(s) URL",
    ),
    "public_url with a path": (
        "[portal]\npublic_url = 'http://127.0.0.1:8000/mcp'\n",
        "portal.public_url",
        "must be an origin without path",
    ),
    "bad server name": (
        "[servers.'bad name']\ncommand = 'x'\n",
        "servers.bad name",
        "server name 'bad name' must match [A-Za-z0-9][A-Za-z0-9_-]{0,31} (a letter or digit, then up to 31",
    ),
    "server name starting with a dash": ("[servers.-x]\ncommand = 'x'\n", "servers.-x", "server name '-x' must match"),
    "server name too long": (
        f"[servers.{'a' * 33}]\ncommand = 'x'\n",
        f"servers.{'a' * 33}",
        f"server name '{'a' * 33}'",
    ),
    "server name with a trailing newline": ('[servers."a\\n"]\ncommand = "x"\n', "servers.a\n", "server name 'a\\n'"),
    "prefix with a trailing newline": ('[servers.a]\ncommand = "x"\nprefix = "p\\n"\n', "servers.a", "'prefix' must"),
    "bad prefix": ("[servers.a]\ncommand = 'x'\nprefix = 'no spaces'\n", "servers.a", "'prefix' must match"),
    "prefix too long": ("[servers.a]\ncommand = 'x'\nprefix = '" + "p" * 33 + "'\n", "servers.a", "'prefix' must"),
    "headers on a stdio server": (
        "[servers.a]\ncommand = 'x'\nheaders = { A = 'b' }\n",
        "servers.a",
        "'headers' only applies to a 'url' server",
    ),
    "args on a url server": (
        "[servers.a]\nurl = 'https://example.com/mcp'\nargs = ['x']\n",
        "servers.a",
        "'args', 'env' and 'cwd' only apply to a 'command' server",
    ),
    "module without an attribute": ("[servers.a]\nmodule = 'pkg.mod'\n", "servers.a", "'module' must look like"),
    "number out of range": ("[portal]\nmax_stdio_children = 0\n", "portal.max_stdio_children", "greater than"),
    "auth mode this version lacks": ("[auth]\nmode = 'ldap'\n", "auth.mode", "'oauth' or 'none'"),
    "client credentials without a secret": (
        "[auth.clients.ci]\ngrant_types = ['client_credentials']\n",
        "auth.clients.ci",
        "'client_credentials' needs a 'secret'",
    ),
    "a redirect uri over plain http elsewhere than loopback": (
        "[auth.clients.app]\nredirect_uris = ['http://app.example.com/cb']\n",
        "auth.clients.app",
        "must use https (http only on a loopback host)",
    ),
    "unset variable in a client secret": (
        "[auth.clients.ci]\ngrant_types = ['client_credentials']\nsecret = '${CI_SECRET}'\n",
        "auth.clients.ci.secret",
        "environment variable 'CI_SECRET' is not set",
    ),
    "wrong type": ("[servers.a]\ncommand = 'x'\nargs = 'not a list'\n", "servers.a.args", "valid list"),
    "unset variable without default": (
        "[servers.a]\ncommand = 'x'\nargs = ['--token', '${TOKEN}']\n",
        "servers.a.args[1]",
        "environment variable 'TOKEN' is not set (use ${TOKEN:-default})",
    ),
    "unset variable in a header": (
        "[servers.a]\nurl = 'https://example.com/mcp'\nheaders = { Authorization = 'Bearer ${TOKEN}' }\n",
        "servers.a.headers.Authorization",
        "'TOKEN' is not set",
    ),
    "unset variable in env": ("[servers.a]\ncommand = 'x'\nenv = { K = '${HOME_X}' }\n", "servers.a.env.K", "HOME_X"),
    "unset variable in url": ("[servers.a]\nurl = '${BASE}/mcp'\n", "servers.a.url", "'BASE' is not set"),
    "unset variable in database": (
        "[portal]\ndatabase = 'postgresql://dockyard:${PGPASSWORD}@db.example/dockyard'\n",
        "portal.database",
        "environment variable 'PGPASSWORD' is not set",
    ),
    "public_url with a port out of range": (
        "[portal]\npublic_url = 'http://127.0.0.1:99999'\n",
        "portal.public_url",
        "has an invalid port, got 'http://127.0.0.1:99999'",
    ),
}


@pytest.mark.parametrize(("text", "key", "reason"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_a_bad_input_is_a_config_error_naming_the_file_the_dotted_key_and_the_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = write(tmp_path, text)
    error = config_error(path)
    assert error.source == str(path)
    assert error.key == key
    assert reason in error.reason
    assert str(error).startswith(f"{path}: {key}: ")


def test_several_errors_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    error = config_error(write(tmp_path, "[portal]\nbogus = 1\nother = 2\nmax_stdio_children = 0\n"))
    assert error.reason.endswith("(and 2 more errors)")


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[portal]\npublic_url = \n")
    error = config_error(path)
    assert (error.source, error.key) == (str(path), "")
    assert error.reason.startswith("not valid TOML: ")
    assert "line 2" in error.reason


def test_a_missing_file_is_a_config_error_saying_how_to_start(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    error = config_error(path)
    assert (error.source, error.key) == (str(path), "")
    assert "file not found" in error.reason
    assert "dockyard.example.toml" in error.reason


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "dockyard.toml"
    path.write_bytes(b"[portal]\n# caf\xe9\n")
    error = config_error(path)
    assert error.source == str(path)
    assert error.reason.startswith("cannot read: ")


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${TOKEN}", {"TOKEN": "abc"}, "abc"),
        ("${TOKEN:-fallback}", {}, "fallback"),
        ("${TOKEN:-fallback}", {"TOKEN": "set"}, "set"),
        ("${TOKEN:-}", {}, ""),
        ("${TOKEN}", {"TOKEN": ""}, ""),
        ("$$", {}, "$"),
        ("$${TOKEN}", {"TOKEN": "abc"}, "${TOKEN}"),
        ("$$$${TOKEN}", {}, "$${TOKEN}"),
        ("price: $5, $HOME stays", {"HOME": "/root"}, "price: $5, $HOME stays"),
        ("${A}-${B:-b}-$$-${A}", {"A": "a"}, "a-b-$-a"),
    ],
)
def test_expand_env_substitutes_variables_defaults_and_the_dollar_escape(
    value: str, environ: dict[str, str], expected: str
) -> None:
    assert expand_env(value, environ, source="f.toml", key="k") == expected


def test_expand_env_refuses_an_unset_variable_without_default() -> None:
    with pytest.raises(ConfigError) as excinfo:
        expand_env("x${NOPE}y", {}, source="f.toml", key="servers.a.command")
    assert (excinfo.value.source, excinfo.value.key) == ("f.toml", "servers.a.command")
    assert "'NOPE' is not set" in excinfo.value.reason


def test_variables_expand_in_every_server_field_that_takes_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [servers.a]
        command = "${BIN:-node}"
        args = ["--port", "${PORT}", "$$literal"]
        env = { KEY = "${KEY:-none}" }
        cwd = "${WORK}"

        [servers.b]
        url = "https://${HOST}/mcp"
        headers = { Authorization = "Bearer ${TOKEN}" }
        """,
    )
    settings = load_settings(path, environ={"PORT": "9", "WORK": "/srv/w", "HOST": "h.example", "TOKEN": "t"})
    a, b = settings.servers["a"], settings.servers["b"]
    assert (a.command, a.args, a.env, a.cwd) == ("node", ["--port", "9", "$literal"], {"KEY": "none"}, Path("/srv/w"))
    assert (b.url, b.headers) == ("https://h.example/mcp", {"Authorization": "Bearer t"})


def test_load_settings_reads_the_process_environment_when_none_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_TEST_BIN", "from-env")
    settings = load_settings(write(tmp_path, "[servers.a]\ncommand = '${DOCKYARD_TEST_BIN}'\n"))
    assert settings.servers["a"].command == "from-env"


def test_a_relative_data_dir_resolves_against_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "dockyard"
    folder.mkdir(parents=True)
    path = write(folder, "[portal]\ndata_dir = 'state'\n\n[servers.a]\ncommand = 'x'\ncwd = 'work'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(Path(os.path.relpath(path, elsewhere)), environ={})
    assert settings.portal.data_dir == folder / "state"
    assert settings.database_url == f"sqlite:///{folder / 'state' / 'dockyard.db'}"
    assert settings.servers["a"].cwd == folder / "work"


def test_an_absolute_data_dir_and_an_explicit_database_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "[portal]\ndata_dir = '/var/lib/dockyard'\ndatabase = 'postgresql://db.example/dockyard'\n")
    settings = load_settings(path, environ={})
    assert settings.portal.data_dir == Path("/var/lib/dockyard")
    assert settings.database_url == "postgresql://db.example/dockyard"


def test_with_overrides_and_nothing_to_override_returns_the_same_settings() -> None:
    settings = Settings()
    assert settings.with_overrides() is settings


@pytest.mark.parametrize(
    ("public_url", "host", "port", "expected"),
    [
        ("http://127.0.0.1:8000", None, 9000, "http://127.0.0.1:9000"),
        ("http://127.0.0.1:8000", "0.0.0.0", None, "http://0.0.0.0:8000"),
        ("http://127.0.0.1:8000", "::1", 8443, "http://[::1]:8443"),
        ("http://[::1]:8000", None, 9000, "http://[::1]:9000"),
        ("https://portal.example.com", "10.0.0.5", None, "https://10.0.0.5:443"),
        ("http://portal.example.com", None, 8080, "http://portal.example.com:8080"),
    ],
)
def test_with_overrides_replaces_only_the_host_or_port_of_public_url(
    public_url: str, host: str | None, port: int | None, expected: str
) -> None:
    settings = Settings.model_validate({"portal": {"public_url": public_url}, "servers": {"a": {"command": "x"}}})
    changed = settings.with_overrides(host=host, port=port)
    assert changed.portal.public_url == expected
    assert changed.servers == settings.servers
    assert settings.portal.public_url == public_url.rstrip("/")
    assert changed.portal.bind_host == (host or settings.portal.bind_host).strip("[]")


@pytest.mark.parametrize("host", ["[::1]", "::1"], ids=["bracketed", "bare"])
def test_with_overrides_accepts_an_ipv6_host_with_or_without_brackets(host: str) -> None:
    changed = Settings().with_overrides(host=host)
    assert changed.portal.public_url == "http://[::1]:8000"
    assert changed.portal.bind_host == "::1"


def test_with_overrides_refuses_a_host_that_makes_public_url_invalid() -> None:
    with pytest.raises(ConfigError) as excinfo:
        Settings().with_overrides(port=70000)
    assert (excinfo.value.source, excinfo.value.key) == ("--host/--port", "portal.public_url")
    assert "has an invalid port, got 'http://127.0.0.1:70000'" in excinfo.value.reason


@pytest.mark.parametrize(
    "text",
    ['[servers."a\\n"]\ncommand = "x"\n', '[servers.a]\ncommand = "x"\nprefix = "p\\n"\n'],
    ids=["server name", "prefix"],
)
def test_a_name_or_prefix_with_a_trailing_newline_is_refused_even_when_built_in_code(text: str) -> None:
    """G2: ``a\\n__tool`` would not be a client-safe name; the model refuses it, not only the file loader."""
    raw = tomllib.loads(text)
    with pytest.raises(ValidationError):
        Settings.model_validate(raw)


def test_the_database_url_expands_variables_so_the_password_can_come_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[portal]\ndatabase = 'postgresql://dockyard:${PGPASSWORD}@db.example/dockyard'\n")
    settings = load_settings(path, environ={"PGPASSWORD": "s3cret"})
    assert settings.database_url == "postgresql://dockyard:s3cret@db.example/dockyard"


def test_a_bad_server_name_is_refused_before_any_variable_of_it_is_expanded(tmp_path: Path) -> None:
    error = config_error(write(tmp_path, "[servers._x]\ncommand = '${UNSET}'\n"))
    assert error.key == "servers._x"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_is_loopback_host_accepts_only_names_of_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
