"""``dockyard servers import``: bring servers from an existing ``mcpServers`` JSON file into dockyard.toml.

Understands the shapes users already have: Claude Desktop and Cursor (``{"mcpServers": {NAME: {command,
args, env}}}`` or ``{url, headers}``), VS Code (``{"servers": {NAME: {type, command, args, env, url,
headers}}}``), and a bare ``{NAME: {...}}`` map. Every entry is validated exactly as the portal would
validate it before anything is written, and the file is replaced atomically.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from portal.config import ServerSettings
from portal.errors import ServersImportError

__all__ = ["ImportedServer", "import_servers", "parse_mcp_servers", "render_toml"]

ImportedServer = tuple[str, ServerSettings]
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


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
    """One entry of any supported shape as a ``[servers.NAME]`` table."""
    table: dict[str, Any] = {}
    if "command" in entry:
        table["command"] = entry["command"]
        table.update({key: entry[key] for key in ("args", "env", "cwd") if key in entry})
    elif "url" in entry or "serverUrl" in entry:
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


def parse_mcp_servers(text: str, *, source: str) -> list[ImportedServer]:
    """Parse and validate an ``mcpServers`` document.

    Raises:
        ServersImportError: The document is not JSON, has no servers, or an entry is invalid.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ServersImportError(f"{source}: not valid JSON: {error}") from None
    result: list[ImportedServer] = []
    for raw_name, raw in _entries(document, source).items():
        if not isinstance(raw, dict):
            raise ServersImportError(f"{source}: server {raw_name!r} must be an object")
        name = _SAFE_NAME.sub("-", raw_name).strip("-")[:32] or "server"
        table = _table(raw_name, cast(dict[str, Any], raw), source)
        try:
            result.append((name, ServerSettings.model_validate(table)))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            reason = first["msg"].removeprefix("Value error, ")
            raise ServersImportError(
                f"{source}: server {raw_name!r}: {where + ': ' if where else ''}{reason}"
            ) from None
    if not result:
        raise ServersImportError(f"{source}: the file lists no servers")
    return result


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in cast(list[object], value)) + "]"
    if isinstance(value, dict):
        items = cast(dict[str, object], value)
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in items.items()) + " }"
    return json.dumps(value)


def render_toml(servers: list[ImportedServer]) -> str:
    """The ``[servers.NAME]`` tables for ``servers``, in the same key style as the example config."""
    blocks: list[str] = []
    for name, server in servers:
        data = server.model_dump(exclude_defaults=True, mode="json")
        lines = [f"[servers.{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in data.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def import_servers(source: Path, config: Path) -> list[str]:
    """Append the servers of ``source`` to the config file ``config`` (created if missing).

    Returns:
        The names of the imported servers.

    Raises:
        ServersImportError: The source is invalid, or one of its names is already configured.
    """
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise ServersImportError(f"{source}: cannot read: {error.strerror or error}") from None
    servers = parse_mcp_servers(text, source=str(source))
    existing_text = config.read_text(encoding="utf-8") if config.exists() else ""
    try:
        existing = tomllib.loads(existing_text)
    except tomllib.TOMLDecodeError as error:
        raise ServersImportError(f"{config}: not valid TOML, fix it before importing: {error}") from None
    configured = set(cast(dict[str, Any], existing.get("servers", {})))
    clashes = sorted(name for name, _ in servers if name in configured)
    if clashes:
        raise ServersImportError(
            f"{config}: already configures {', '.join(clashes)}; remove them or rename in {source}"
        )
    addition = render_toml(servers)
    new_text = existing_text + ("\n" if existing_text and not existing_text.endswith("\n\n") else "") + addition
    tomllib.loads(new_text)  # never write a file the portal could not read
    config.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=config.parent, prefix=f".{config.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new_text)
        if config.exists():
            os.chmod(tmp, config.stat().st_mode & 0o777)
        os.replace(tmp, config)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return [name for name, _ in servers]
