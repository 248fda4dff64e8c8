"""``dockyard servers import``: bring servers from an existing ``mcpServers`` JSON file into dockyard.toml.

Understands the shapes users already have: Claude Desktop and Cursor (``{"mcpServers": {NAME: {command,
args, env}}}`` or ``{url, headers}``), VS Code (``{"servers": {NAME: {type, command, args, env, url,
headers}}}``), and a bare ``{NAME: {...}}`` map.

Values mean what they meant in the source file: a ``$`` is written as ``$$`` so it stays literal, VS Code's
``${env:NAME}`` becomes Dockyard's ``${NAME}``, and ``${input:...}`` (a prompt VS Code shows the user) is
refused. Names become valid config names, distinct from each other. The whole resulting file is validated
exactly as the portal will load it before anything is written, and the file is replaced atomically.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from portal.config import ServerSettings, is_valid_name, settings_from_mapping
from portal.errors import ConfigError, ServersImportError

__all__ = ["ImportedServer", "import_servers", "parse_mcp_servers", "render_toml"]

ImportedServer = tuple[str, ServerSettings]
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")
_NAME_LENGTH = 32
_DOLLAR = re.compile(r"\$\{(env|input):([^}]*)\}|\$")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = "imported"  # a valid server name to validate one entry under
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')
_TOML_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


@dataclass(frozen=True)
class _Entry:
    raw_name: str
    table: dict[str, Any]
    """The ``[servers.NAME]`` table as it is written: ``$`` escaped, ``${NAME}`` references."""
    settings: ServerSettings
    """The same server as the portal will see it, references expanded."""


def _entries(document: object, source: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ServersImportError(f"{source}: expected a JSON object at the top level")
    doc = cast(dict[str, Any], document)
    for key in ("mcpServers", "servers"):
        if key in doc:
            value = doc[key]
            if not isinstance(value, dict):
                raise ServersImportError(f"{source}: {key!r} must be an object of servers")
            return cast(dict[str, Any], value)
    if doc and all(isinstance(v, dict) and ("command" in v or "url" in v) for v in doc.values()):
        return doc
    raise ServersImportError(f"{source}: no 'mcpServers' or 'servers' object found")


def _table(raw_name: str, entry: dict[str, Any], source: str) -> dict[str, Any]:
    """One entry of any supported shape as a ``[servers.NAME]`` table, with the values as they are."""
    table: dict[str, Any] = {}
    has_url = "url" in entry or "serverUrl" in entry
    if "command" in entry and has_url:
        raise ServersImportError(
            f"{source}: server {raw_name!r} has both 'command' and 'url'; remove one of them and import again"
        )
    if "command" in entry:
        table["command"] = entry["command"]
        table.update({key: entry[key] for key in ("args", "env", "cwd") if key in entry})
    elif has_url:
        table["url"] = entry.get("url", entry.get("serverUrl"))
        if "headers" in entry:
            table["headers"] = entry["headers"]
        if (entry.get("type") or entry.get("transport")) == "sse":
            table["transport"] = "sse"
    else:
        raise ServersImportError(f"{source}: server {raw_name!r} has neither 'command' nor 'url'")
    if entry.get("disabled") is True:
        table["enabled"] = False
    return table


def _map_expanded(table: Mapping[str, Any], convert: Callable[[str, str], str]) -> dict[str, Any]:
    """``table`` with ``convert(value, key)`` applied to every string the config expands ``${VAR}`` in."""
    result = dict(table)
    for field in ("command", "url", "cwd"):
        if isinstance(value := result.get(field), str):
            result[field] = convert(value, field)
    if isinstance(args := result.get("args"), list):
        result["args"] = [
            convert(a, f"args[{i}]") if isinstance(a, str) else a for i, a in enumerate(cast(list[object], args))
        ]
    for field in ("env", "headers"):
        if isinstance(mapping := result.get(field), dict):
            result[field] = {
                k: convert(v, f"{field}.{k}") if isinstance(v, str) else v
                for k, v in cast(dict[str, object], mapping).items()
            }
    return result


def _config_form(raw_name: str, table: dict[str, Any], source: str) -> dict[str, Any]:
    """``table`` with its values written so that the config reads back what the source meant."""

    def convert(value: str, key: str) -> str:
        def replace(match: re.Match[str]) -> str:
            kind, argument = match.group(1), match.group(2)
            if kind is None:
                return "$$"
            if kind == "input":
                raise ServersImportError(
                    f"{source}: server {raw_name!r}: {key}: {match.group(0)!r} asks the user for a value, which "
                    "the portal cannot do; put the value in an environment variable and use ${env:NAME} instead"
                )
            if not _ENV_NAME.fullmatch(argument):
                raise ServersImportError(
                    f"{source}: server {raw_name!r}: {key}: {match.group(0)!r} is not a variable name Dockyard "
                    "can read (letters, digits and '_', not starting with a digit)"
                )
            return f"${{{argument}}}"

        return _DOLLAR.sub(replace, value)

    return _map_expanded(table, convert)


def _check_writable(raw_name: str, value: object, source: str, key: str = "") -> None:
    """Refuse a string a UTF-8 TOML file cannot hold: a lone surrogate, decoded from a JSON escape.

    The message names the key, never the value, which may be a secret (SECURITY.md U3).
    """
    if isinstance(value, list):
        for i, item in enumerate(cast(list[object], value)):
            _check_writable(raw_name, item, source, f"{key}[{i}]")
    elif isinstance(value, dict):
        for k, item in cast(dict[str, object], value).items():
            if not _encodable(k):
                where = f"{key}: " if key else ""
                raise ServersImportError(
                    f"{source}: server {raw_name!r}: {where}the key {k!r} holds a lone surrogate, which no TOML "
                    "file can hold"
                )
            _check_writable(raw_name, item, source, f"{key}.{k}" if key else k)
    elif isinstance(value, str) and not _encodable(value):
        raise ServersImportError(
            f"{source}: server {raw_name!r}: {key}: the value holds a lone surrogate, which no TOML file can hold"
        )


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _validated(raw_name: str, table: dict[str, Any], source: str, environ: Mapping[str, str]) -> ServerSettings:
    """The server ``table`` describes, validated (and expanded) exactly as the portal loads it."""
    try:
        settings = settings_from_mapping(
            {"servers": {_PLACEHOLDER: copy.deepcopy(table)}}, source=source, base_dir=Path(), environ=environ
        )
    except ConfigError as error:
        where = error.key.removeprefix(f"servers.{_PLACEHOLDER}").removeprefix(".")
        raise ServersImportError(
            f"{source}: server {raw_name!r}: {where + ': ' if where else ''}{error.reason}"
        ) from None
    return settings.servers[_PLACEHOLDER]


def _config_name(raw_name: str) -> str:
    """A name the config accepts, as close to ``raw_name`` as it can be."""
    cleaned = _UNSAFE_NAME.sub("-", raw_name).lstrip("-_")[:_NAME_LENGTH].rstrip("-")
    return cleaned or "server"


def _assign_names(raw_names: Collection[str], configured: Collection[str]) -> dict[str, str]:
    """Distinct config names for ``raw_names``, independent of their order.

    A name that is already valid keeps its exact form; the others, in sorted order, take their cleaned form,
    or that form with ``-2``, ``-3``... when another name has it (never a name ``configured`` already has).
    """
    result = {raw: raw for raw in raw_names if is_valid_name(raw)}
    taken = set(result.values())
    for raw in sorted(set(raw_names) - result.keys()):
        base = _config_name(raw)
        numbered = (base[: _NAME_LENGTH - len(f"-{n}")].rstrip("-") + f"-{n}" for n in itertools.count(2))
        # The plain form may be a configured name (that is a clash to report); a numbered one never is.
        name = base if base not in taken else next(n for n in numbered if n not in taken and n not in configured)
        result[raw] = name
        taken.add(name)
    return result


def _parse(
    text: str, *, source: str, configured: Collection[str], environ: Mapping[str, str]
) -> list[tuple[str, _Entry]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ServersImportError(f"{source}: not valid JSON: {error}") from None
    entries: list[_Entry] = []
    for raw_name, raw in _entries(document, source).items():
        if not isinstance(raw, dict):
            raise ServersImportError(f"{source}: server {raw_name!r} must be an object")
        table = _table(raw_name, cast(dict[str, Any], raw), source)
        _check_writable(raw_name, table, source)
        config_table = _config_form(raw_name, table, source)
        entries.append(_Entry(raw_name, config_table, _validated(raw_name, config_table, source, environ)))
    if not entries:
        raise ServersImportError(f"{source}: the file lists no servers")
    names = _assign_names([entry.raw_name for entry in entries], configured)
    return [(names[entry.raw_name], entry) for entry in entries]


def parse_mcp_servers(
    text: str, *, source: str, configured: Collection[str] = (), environ: Mapping[str, str] | None = None
) -> list[ImportedServer]:
    """Parse and validate an ``mcpServers`` document.

    Args:
        text: The JSON document.
        source: Where it came from, for messages.
        configured: Server names the config already has; a renamed server never takes one.
        environ: The environment ``${env:NAME}`` references expand from (default: the process's).

    Returns:
        ``(config name, server)`` in document order, each server as the portal will see it.

    Raises:
        ServersImportError: The document is not JSON, has no servers, or an entry is invalid.
    """
    env = os.environ if environ is None else environ
    return [(name, entry.settings) for name, entry in _parse(text, source=source, configured=configured, environ=env)]


def _toml_string(value: str) -> str:
    def escape(match: re.Match[str]) -> str:
        char = match.group(0)
        return _TOML_SHORT.get(char) or f"\\u{ord(char):04X}"

    return '"' + _TOML_ESCAPE.sub(escape, value) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in cast(list[object], value)) + "]"
    if isinstance(value, dict):
        items = cast(dict[str, object], value).items()
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in items) + " }"
    return json.dumps(value)


def _render(tables: list[tuple[str, Mapping[str, object]]]) -> str:
    blocks = [
        "\n".join([f"[servers.{name}]", *(f"{_toml_key(key)} = {_toml_value(value)}" for key, value in table.items())])
        for name, table in tables
    ]
    return "\n\n".join(blocks) + "\n"


def render_toml(servers: list[ImportedServer]) -> str:
    """The ``[servers.NAME]`` tables for ``servers``, in the same key style as the example config.

    Values are literal: a ``$`` is written as ``$$``, so the portal reads back exactly these settings.
    """
    tables = [(name, server.model_dump(exclude_defaults=True, mode="json")) for name, server in servers]
    return _render([(name, _map_expanded(table, _literal)) for name, table in tables])


def _literal(value: str, _key: str) -> str:
    return value.replace("$", "$$")


def _written(entry: _Entry) -> dict[str, Any]:
    """The keys of ``entry.table`` that differ from the defaults, in the order of the settings' fields."""
    differ = entry.settings.model_dump(exclude_defaults=True)
    return {key: entry.table[key] for key in ServerSettings.model_fields if key in differ and key in entry.table}


def _read_config(config: Path, environ: Mapping[str, str]) -> tuple[str, set[str]]:
    """The config's text and server names; refuses a config that does not load as it is."""
    try:
        text = config.read_text(encoding="utf-8") if config.exists() else ""
    except (OSError, UnicodeDecodeError) as error:
        raise ServersImportError(f"{config}: cannot read: {error}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ServersImportError(f"{config}: not valid TOML, fix it before importing: {error}") from None
    try:
        settings_from_mapping(raw, source=str(config), base_dir=config.resolve().parent, environ=environ)
    except ConfigError as error:
        where = f"{error.key}: " if error.key else ""
        raise ServersImportError(f"{config}: does not load, fix it before importing: {where}{error.reason}") from None
    return text, set(cast(dict[str, Any], raw.get("servers", {})))


def _check_result(new_text: str, source: Path, config: Path, environ: Mapping[str, str]) -> None:
    """Refuse to write a file the portal would not load."""
    try:
        raw = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as error:  # a bug in this module: say so rather than write the file
        raise ServersImportError(f"{source}: the servers cannot be written as valid TOML ({error})") from None
    try:
        settings_from_mapping(raw, source=str(config), base_dir=config.resolve().parent, environ=environ)
    except ConfigError as error:
        where = f"{error.key}: " if error.key else ""
        raise ServersImportError(f"{source}: not imported, {config} would not load: {where}{error.reason}") from None


def _replace(config: Path, text: str) -> None:
    config.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=config.parent, prefix=f".{config.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if config.exists():
            os.chmod(tmp, config.stat().st_mode & 0o777)
        os.replace(tmp, config)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def import_servers(source: Path, config: Path, *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Append the servers of ``source`` to the config file ``config`` (created if missing).

    Nothing is written unless the whole resulting file loads, with ``environ``, exactly as the portal loads it.

    Args:
        source: The ``mcpServers`` JSON file.
        config: The ``dockyard.toml`` to add the servers to.
        environ: The environment the config is validated with (default: the process's).

    Returns:
        The config names of the imported servers, in the order of the source.

    Raises:
        ServersImportError: The source is invalid, one of its names is already configured, the config does
            not load as it is, or would not load with the servers added.
    """
    env = os.environ if environ is None else environ
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise ServersImportError(f"{source}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ServersImportError(f"{source}: cannot read: {error}") from None
    existing_text, configured = _read_config(config, env)
    entries = _parse(text, source=str(source), configured=configured, environ=env)
    clashes = sorted(name for name, _ in entries if name in configured)
    if clashes:
        raise ServersImportError(
            f"{config}: already configures {', '.join(clashes)}; remove them or rename in {source}"
        )
    addition = _render([(name, _written(entry)) for name, entry in entries])
    new_text = existing_text + ("\n" if existing_text and not existing_text.endswith("\n\n") else "") + addition
    _check_result(new_text, source, config, env)
    _replace(config, new_text)
    return [name for name, _ in entries]
