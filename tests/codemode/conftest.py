"""Fixtures for the Code Mode tests: the saved real catalogs and the SDK generated from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import mcp_types as types
import pytest

from codemode import GeneratedSdk, generate_sdk, load_sdk
from tests.codemode.catalogs import load_catalogs
from tests.portal.conftest import database_url, postgres_database, postgres_url  # noqa: F401 (both databases)


@dataclass
class Recorder:
    """A call hook that records what the SDK sends and answers with a fixed result."""

    calls: list[tuple[str, dict[str, object]]] = field(default_factory=list[tuple[str, dict[str, object]]])
    result: object = None

    async def __call__(self, target: str, arguments: dict[str, object], /) -> object:
        self.calls.append((target, arguments))
        return self.result


@dataclass
class LoadedSdk:
    sdk: GeneratedSdk
    module: ModuleType
    recorder: Recorder

    @property
    def namespace(self) -> dict[str, Any]:
        return self.module.__dict__

    def callable(self, server: str, tool: str) -> Any:
        function = self.sdk.function(server, tool)
        return getattr(getattr(self.module, function.namespace), function.name)


def load(sdk: GeneratedSdk) -> LoadedSdk:
    recorder = Recorder()
    return LoadedSdk(sdk, load_sdk(sdk, recorder), recorder)


@pytest.fixture(scope="session")
def catalogs() -> dict[str, list[types.Tool]]:
    return load_catalogs()


@pytest.fixture(scope="session")
def real_sdk(catalogs: dict[str, list[types.Tool]]) -> LoadedSdk:
    return load(generate_sdk(catalogs))
