"""The sandbox server's options: the ``[servers.NAME.options]`` table of a ``builtin = "sandbox"`` entry.

```toml
[servers.sandbox]
builtin = "sandbox"

[servers.sandbox.options]
backend = "bubblewrap"          # or "docker"
idle_stop = 600                 # seconds without a call before a box is stopped (files kept)
idle_timeout = 86400            # seconds without a call before the reaper destroys a sandbox
max_per_owner = 5
egress = []                     # allow-list when the server runs alone (the portal sends the policy's)

[servers.sandbox.options.limits]      # defaults of a new sandbox
memory_mb = 512
[servers.sandbox.options.max_limits]  # the most a caller may ask for
memory_mb = 4096

[[servers.sandbox.options.credentials]]
host = "api.github.com"
headers = { Authorization = "Bearer ${GITHUB_TOKEN}" }
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servers.sandbox._backend import Limits
from servers.sandbox._proxy import Credential

__all__ = ["SandboxSettings", "parse_options"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _LimitsModel(_Strict):
    memory_mb: Annotated[int, Field(ge=16, le=1024 * 1024)] | None = None
    cpus: Annotated[float, Field(gt=0, le=256)] | None = None
    pids: Annotated[int, Field(ge=8, le=1_000_000)] | None = None
    wall_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] | None = None
    disk_mb: Annotated[int, Field(ge=16, le=1024 * 1024)] | None = None
    tmp_mb: Annotated[int, Field(ge=1, le=1024 * 1024)] | None = None
    output_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] | None = None
    file_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] | None = None
    open_files: Annotated[int, Field(ge=64, le=1 << 20)] | None = None

    def apply(self, base: Limits) -> Limits:
        values = {f.name: getattr(base, f.name) for f in fields(base)}
        values.update({k: v for k, v in self.model_dump().items() if v is not None})
        return Limits(**values)


class _CredentialModel(_Strict):
    host: Annotated[str, Field(min_length=1)]
    headers: dict[str, str] = Field(default_factory=dict[str, str])
    scheme: Literal["https", "http"] = "https"


class _OptionsModel(_Strict):
    backend: Literal["bubblewrap", "docker"] = "bubblewrap"
    idle_stop: Annotated[float, Field(gt=0)] = 600.0
    idle_timeout: Annotated[float, Field(gt=0)] = 86400.0
    max_per_owner: Annotated[int, Field(ge=1, le=10_000)] = 5
    egress: list[str] = Field(default_factory=list[str])
    env: dict[str, str] = Field(default_factory=dict[str, str])
    limits: _LimitsModel = Field(default_factory=_LimitsModel)
    max_limits: _LimitsModel = Field(default_factory=_LimitsModel)
    credentials: list[_CredentialModel] = Field(default_factory=list[_CredentialModel])
    bubblewrap: dict[str, Any] = Field(default_factory=dict[str, Any])
    docker: dict[str, Any] = Field(default_factory=dict[str, Any])


_DEFAULT_MAX = Limits(
    memory_mb=4096,
    cpus=2.0,
    pids=1024,
    wall_seconds=3600.0,
    disk_mb=10240,
    tmp_mb=1024,
    output_bytes=16 * 1024 * 1024,
    file_bytes=64 * 1024 * 1024,
    open_files=4096,
)


@dataclass(frozen=True, kw_only=True)
class SandboxSettings:
    """The parsed options."""

    backend: str = "bubblewrap"
    backend_options: Mapping[str, Any] = field(default_factory=dict[str, Any])
    defaults: Limits = field(default_factory=Limits)
    maximum: Limits = _DEFAULT_MAX
    idle_stop: float = 600.0
    """Seconds without a call before a box is stopped (its files stay)."""
    idle_timeout: float = 86400.0
    """Seconds without a call before the reaper destroys a sandbox."""
    max_per_owner: int = 5
    egress: tuple[str, ...] = ()
    """Allow-list of a caller the portal did not describe (the server running alone)."""
    env: Mapping[str, str] = field(default_factory=dict[str, str])
    credentials: tuple[Credential, ...] = ()


def parse_options(options: Mapping[str, Any] | None) -> SandboxSettings:
    """Validate the options table.

    Raises:
        ValueError: An option is unknown or has a bad value; the message names it.
    """
    try:
        model = _OptionsModel.model_validate(dict(options or {}))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        reason = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            reason = "unknown option (see the Sandbox section of the README)"
        raise ValueError(f"options.{where}: {reason}") from None
    maximum = model.max_limits.apply(_DEFAULT_MAX)
    defaults = model.limits.apply(Limits())
    for f in fields(Limits):
        if getattr(defaults, f.name) > getattr(maximum, f.name):
            raise ValueError(
                f"options.limits.{f.name}: {getattr(defaults, f.name)!r} is above "
                f"options.max_limits.{f.name} = {getattr(maximum, f.name)!r}"
            )
    return SandboxSettings(
        backend=model.backend,
        backend_options=model.bubblewrap if model.backend == "bubblewrap" else model.docker,
        defaults=defaults,
        maximum=maximum,
        idle_stop=model.idle_stop,
        idle_timeout=model.idle_timeout,
        max_per_owner=model.max_per_owner,
        egress=tuple(model.egress),
        env=dict(model.env),
        credentials=tuple(Credential(host=c.host, headers=dict(c.headers), scheme=c.scheme) for c in model.credentials),
    )
