"""Helpers for the policy tests: policy directories written from text."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from portal.policy import PolicyEngine, PolicyLoadError, load_policy

Write = Callable[..., Path]


def write_files(directory: Path, **files: str) -> Path:
    """Write ``name=text`` pairs as ``name.yaml`` (dedented) into ``directory``; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / f"{name}.yaml").write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return directory


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    return tmp_path / "policies"


@pytest.fixture
def load(policy_dir: Path) -> Callable[..., PolicyEngine]:
    """Write the files and load the directory."""

    def load(**files: str) -> PolicyEngine:
        return load_policy(write_files(policy_dir, **files))

    return load


@pytest.fixture
def problems(policy_dir: Path) -> Callable[..., list[str]]:
    """Write the files, fail to load them, and return each problem as ``file.yaml:LINE: reason``."""

    def problems(**files: str) -> list[str]:
        with pytest.raises(PolicyLoadError) as caught:
            load_policy(write_files(policy_dir, **files))
        return [str(p).removeprefix(f"{policy_dir}/") for p in caught.value.problems]

    return problems
