"""How the portal builds in-process servers from factories: options and the data directory go in when asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp.server import MCPServer, Server

from portal.config import ServerSettings
from portal.errors import ConfigError
from portal.upstreams import resolve_inprocess

SEEN: dict[str, Any] = {}


def zero_arg_factory() -> MCPServer[Any]:
    return MCPServer("plain")


def options_factory(options: dict[str, Any], *, data_dir: Path | None = None) -> MCPServer[Any]:
    SEEN.update(options=options, data_dir=data_dir)
    if options.get("bad"):
        raise ValueError("options.bad: not today")
    return MCPServer("configured")


PLAIN = MCPServer("object")


def test_a_zero_argument_factory_still_works(tmp_path: Path) -> None:
    settings = ServerSettings(module=f"{__name__}:zero_arg_factory")
    assert isinstance(resolve_inprocess("x", settings, "<t>", data_dir=tmp_path), Server)


def test_a_factory_gets_its_options_and_the_data_directory(tmp_path: Path) -> None:
    settings = ServerSettings(module=f"{__name__}:options_factory", options={"size": 3})
    resolve_inprocess("x", settings, "<t>", data_dir=tmp_path)
    assert SEEN == {"options": {"size": 3}, "data_dir": tmp_path}


def test_bad_options_are_a_config_error_naming_the_entry(tmp_path: Path) -> None:
    settings = ServerSettings(module=f"{__name__}:options_factory", options={"bad": True})
    with pytest.raises(ConfigError, match=r"servers\.x\.options.*not today"):
        resolve_inprocess("x", settings, "<t>", data_dir=tmp_path)


def test_options_for_a_server_that_takes_none_are_refused(tmp_path: Path) -> None:
    for target in ("zero_arg_factory", "PLAIN"):
        settings = ServerSettings(module=f"{__name__}:{target}", options={"size": 3})
        with pytest.raises(ConfigError, match=r"servers\.x\.options"):
            resolve_inprocess("x", settings, "<t>", data_dir=tmp_path)


def test_the_sandbox_builtin_resolves_with_its_options(tmp_path: Path) -> None:
    settings = ServerSettings(builtin="sandbox", options={"limits": {"memory_mb": 256}})
    assert isinstance(resolve_inprocess("sandbox", settings, "<t>", data_dir=tmp_path), Server)
    with pytest.raises(ConfigError, match=r"servers\.sandbox\.options.*backend"):
        resolve_inprocess("sandbox", ServerSettings(builtin="sandbox", options={"backend": "vmware"}), "<t>")
