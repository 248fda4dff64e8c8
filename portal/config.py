"""Typed settings, loaded from ``dockyard.toml``.

This module is the only place that reads a configuration file or the environment; everything else
receives a :class:`Settings` value. See ``dockyard.example.toml`` for every key with a comment.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from portal.errors import ConfigError

__all__ = [
    "SHIPPED_POLICIES",
    "AuthSettings",
    "ClientSettings",
    "CodeModeSettings",
    "OIDCSettings",
    "PolicySettings",
    "PortalSettings",
    "ServerSettings",
    "Settings",
    "expand_env",
    "is_loopback_host",
    "is_valid_name",
    "load_settings",
    "settings_from_mapping",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_NAME_RULE = f"must match {_NAME.pattern} (a letter or digit, then up to 31 letters, digits, '_' or '-')"
_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies"
"""The ``policies/`` folder that ships with Dockyard (its default policy and examples)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PortalSettings(_Strict):
    """The ``[portal]`` table."""

    public_url: str = "http://127.0.0.1:8000"
    """Where clients reach the portal; the OAuth issuer and resource URL. Host and port to bind default to it."""
    data_dir: Path = Path(".dockyard")
    """SQLite database, upstream logs and other files live here. Relative paths are relative to the config file."""
    database: str | None = None
    """SQLAlchemy URL of the database; defaults to SQLite (WAL) in ``data_dir``. ``postgresql://...`` to scale out.

    ``${VAR}`` expands from the portal's environment, so a password need not be in the file."""
    max_stdio_children: Annotated[int, Field(ge=1, le=1024)] = 64
    """Cap on stdio upstream processes the portal runs at once."""
    health_interval: Annotated[float, Field(gt=0, le=3600)] = 15.0
    """Seconds between health pings to each connected upstream."""
    retry_max_backoff: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Upper bound in seconds of the exponential back-off between reconnects of a failed upstream."""
    insecure_fetch_hosts: list[str] = Field(default_factory=list[str])
    """Development and tests only: hosts whose OAuth metadata, client metadata documents and token endpoints
    the portal may reach over plain http and on loopback or private addresses (normally refused: SSRF)."""

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL such as 'http://127.0.0.1:8000', got {value!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"must be an origin without path, query or fragment, got {value!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
        except ValueError:
            raise ValueError(f"has an invalid port, got {value!r}") from None
        return value.rstrip("/")

    @property
    def bind_host(self) -> str:
        """Host part of ``public_url``."""
        host = urlsplit(self.public_url).hostname
        assert host is not None  # checked by the validator
        return host

    @property
    def bind_port(self) -> int:
        """Port of ``public_url`` (80/443 when absent)."""
        parts = urlsplit(self.public_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


_GRANT_TYPES = Literal["authorization_code", "refresh_token", "client_credentials"]


class ClientSettings(_Strict):
    """One ``[auth.clients.ID]`` table: an OAuth client registered by the admin (its client id is ID)."""

    name: str = ""
    """Shown on the consent page; defaults to the client id."""
    redirect_uris: list[str] = Field(default_factory=list[str])
    """Exact redirect URIs (HTTPS, or http on a loopback host, where any port is accepted)."""
    secret: str | None = None
    """The client secret (``${VAR}`` expands from the environment); none makes a public client using PKCE alone."""
    grant_types: list[_GRANT_TYPES] = Field(default_factory=lambda: ["authorization_code", "refresh_token"])
    """``client_credentials`` makes the client a service principal (an agent, a CI bot): it needs ``secret``."""
    scopes: list[str] = Field(default_factory=lambda: ["tools:read", "tools:call", "code"])
    """The most this client may be granted."""
    groups: list[str] = Field(default_factory=list[str])
    """Groups of the service principal (``client_credentials``), as policy files name them."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if "client_credentials" in self.grant_types and not self.secret:
            raise ValueError("'client_credentials' needs a 'secret' (a service principal must authenticate)")
        if "authorization_code" in self.grant_types and not self.redirect_uris:
            raise ValueError("'authorization_code' needs at least one entry in 'redirect_uris'")
        for uri in self.redirect_uris:
            parts = urlsplit(uri)
            if parts.fragment or not parts.hostname:
                raise ValueError(f"redirect URI {uri!r} must be absolute and have no fragment")
            if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(parts.hostname)):
                raise ValueError(f"redirect URI {uri!r} must use https (http only on a loopback host)")
        return self


class OIDCSettings(_Strict):
    """The ``[auth.oidc]`` table: users may log in through this OpenID Connect provider."""

    issuer: str
    """The provider's issuer URL; its ``/.well-known/openid-configuration`` is fetched (SSRF-checked)."""
    client_id: str
    """The portal's client id at the provider."""
    client_secret: str = ""
    """The portal's client secret at the provider (``${VAR}`` expands from the environment)."""
    groups_claim: str = "groups"
    """The ID token claim whose values become the user's groups."""
    name: str = "single sign-on"
    """How the login page names the provider."""


class AuthSettings(_Strict):
    """The ``[auth]`` table."""

    mode: Literal["oauth", "none"] = "oauth"
    """``oauth`` (the default): every request carries an access token from the portal's authorization server.
    ``none``: no authentication, allowed only when the portal binds to a loopback address."""
    access_token_ttl: Annotated[int, Field(ge=60, le=86400)] = 3600
    """Seconds an access token is valid."""
    refresh_token_ttl: Annotated[int, Field(ge=300, le=365 * 86400)] = 30 * 86400
    """Seconds a grant lives without use: each refresh rotates the refresh token and restarts this clock."""
    dynamic_registration: bool = True
    """Let clients register themselves (RFC 7591), as MCP clients such as Claude do."""
    client_metadata_documents: bool = True
    """Accept an HTTPS URL as client id and fetch its Client ID Metadata Document (SSRF-checked)."""
    clients: dict[str, ClientSettings] = Field(default_factory=dict[str, ClientSettings])
    """Pre-registered clients by client id."""
    oidc: OIDCSettings | None = None
    """Log in through an upstream OpenID Connect provider (besides local accounts)."""
    admin_group: str = "admins"
    """Users in this group may grant clients the ``admin`` scope (the admin API)."""


class PolicySettings(_Strict):
    """The ``[policy]`` table."""

    dir: Path | None = None
    """Directory of policy files (``*.yaml``), reloaded when they change. Default: the ``policies/`` folder
    shipped with Dockyard (its ``default.yaml``). A relative path is relative to the config file."""
    approval_ttl: Annotated[float, Field(gt=0, le=30 * 86400)] = 86400.0
    """Seconds a call held for approval waits for an admin's decision, and an approval stays usable."""


class CodeModeSettings(_Strict):
    """The ``[codemode]`` table: where ``execute(runtime="python")`` runs, and its limits."""

    python_backend: Literal["bubblewrap", "docker", "none"] = "bubblewrap"
    """The sandbox backend of the boxes (one per principal) that run scripts in CPython; ``none`` turns
    ``runtime="python"`` off. Availability is checked at the first such run, which reports what is missing."""
    python_backend_options: dict[str, Any] = Field(default_factory=dict[str, Any])
    """The backend's options, as in ``[servers.NAME.options.bubblewrap]`` or ``.docker``."""
    python_memory_mb: Annotated[int, Field(ge=64, le=64 * 1024)] = 256
    """Address space of the script's Python (``RLIMIT_AS``); its box gets 64 MiB more for the agent."""
    python_cpu_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    python_wall_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    python_max_calls: Annotated[int, Field(ge=1, le=10_000)] = 50
    python_max_output_chars: Annotated[int, Field(ge=100, le=10_000_000)] = 20_000


class ServerSettings(_Strict):
    """One ``[servers.NAME]`` table: exactly one of ``command``, ``url``, ``builtin`` or ``module``."""

    command: str | None = None
    """Executable of a stdio server (looked up on PATH)."""
    args: list[str] = Field(default_factory=list[str])
    """Arguments of ``command``."""
    env: dict[str, str] = Field(default_factory=dict[str, str])
    """The only environment the stdio child gets, on top of HOME, LOGNAME, PATH, SHELL, TERM and USER."""
    cwd: Path | None = None
    """Working directory of the stdio child."""
    url: str | None = None
    """URL of a remote server (Streamable HTTP, or SSE with ``transport = "sse"``)."""
    headers: dict[str, str] = Field(default_factory=dict[str, str])
    """Static headers sent to ``url`` (``${VAR}`` expands from the portal's environment)."""
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    """Wire transport of ``url``."""
    builtin: str | None = None
    """Name of a built-in Dockyard server, mounted in-process."""
    module: str | None = None
    """``package.module:attribute`` of your own Python MCP server (``MCPServer`` or ``Server``), mounted in-process."""
    prefix: bool | str = True
    """``true``: tool and prompt names are ``NAME__tool``; a string replaces NAME; ``false`` keeps upstream names."""
    enabled: bool = True
    """``false`` keeps the entry in the file without connecting to it."""
    client_sessions: Literal["auto", "shared"] = "auto"
    """``auto``: a handshake-era client that can answer elicitation/sampling, or asked for logs, gets its own
    session to this server (a process per client for stdio); ``shared``: one session serves everyone, and
    the server must ask for input with 2026-07-28 input-required results."""
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Seconds allowed for starting and initialising the upstream."""
    call_timeout: Annotated[float, Field(gt=0, le=86400)] = 300.0
    """Seconds a single request to the upstream may take before the portal gives up on it."""
    auth: Literal["none", "oauth"] = "none"
    """``oauth``: the ``url`` server requires OAuth; each user grants the portal access through a consent link
    and calls carry that user's token (the client's own token never goes upstream). ``none``: static
    ``headers`` and secrets from ``dockyard secrets set`` only."""
    oauth_client_id: str | None = None
    """The portal's client id at the upstream's authorization server; without it the portal registers itself
    (RFC 7591)."""
    oauth_client_secret: str | None = None
    """The secret of ``oauth_client_id`` (``${VAR}`` expands from the portal's environment)."""
    oauth_scopes: list[str] | None = None
    """Scopes to ask for; default: those the upstream's metadata advertises."""
    options: dict[str, Any] = Field(default_factory=dict[str, Any])
    """Settings handed to a ``builtin`` or ``module`` server's factory (``${VAR}`` expands in every string)."""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [k for k in ("command", "url", "builtin", "module") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none of them"
            raise ValueError(f"needs exactly one of 'command', 'url', 'builtin' or 'module' (found {found})")
        if self.url is None and self.headers:
            raise ValueError("'headers' only applies to a 'url' server")
        if self.command is None and (self.args or self.env or self.cwd is not None):
            raise ValueError("'args', 'env' and 'cwd' only apply to a 'command' server")
        if self.options and self.builtin is None and self.module is None:
            raise ValueError("'options' only applies to a 'builtin' or 'module' server")
        if self.url is not None and urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"'url' must be http(s), got {self.url!r}")
        if self.auth == "oauth" and self.url is None:
            raise ValueError("'auth = \"oauth\"' only applies to a 'url' server")
        if (self.oauth_client_id or self.oauth_client_secret or self.oauth_scopes) and self.auth != "oauth":
            raise ValueError("'oauth_client_id', 'oauth_client_secret' and 'oauth_scopes' need 'auth = \"oauth\"'")
        if self.module is not None and not re.fullmatch(r"[\w.]+:[\w.]+", self.module):
            raise ValueError(f"'module' must look like 'package.module:attribute', got {self.module!r}")
        if isinstance(self.prefix, str) and not is_valid_name(self.prefix):
            raise ValueError(f"'prefix' {_NAME_RULE}, got {self.prefix!r}")
        return self

    @property
    def kind(self) -> Literal["stdio", "http", "inprocess"]:
        """How the portal reaches this server."""
        if self.command is not None:
            return "stdio"
        if self.url is not None:
            return "http"
        return "inprocess"


class Settings(_Strict):
    """The whole configuration."""

    portal: PortalSettings = Field(default_factory=PortalSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    codemode: CodeModeSettings = Field(default_factory=CodeModeSettings)
    servers: dict[str, ServerSettings] = Field(default_factory=dict[str, ServerSettings])
    source: str = Field(default="<defaults>", exclude=True)
    """Where these settings came from, for messages."""

    @field_validator("servers")
    @classmethod
    def _names(cls, value: dict[str, ServerSettings]) -> dict[str, ServerSettings]:
        for name in value:
            if not is_valid_name(name):
                raise ValueError(f"server name {name!r} {_NAME_RULE}")
        return value

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the database."""
        if self.portal.database:
            return self.portal.database
        return f"sqlite:///{self.portal.data_dir / 'dockyard.db'}"

    def with_overrides(self, *, host: str | None = None, port: int | None = None) -> Settings:
        """A copy whose ``public_url`` uses another host or port (``dockyard serve --host/--port``).

        ``host`` may be an IPv6 address with or without brackets.

        Raises:
            ConfigError: The resulting ``public_url`` is not valid (source ``--host/--port``).
        """
        if host is None and port is None:
            return self
        parts = urlsplit(self.portal.public_url)
        new_host = host or parts.hostname or "127.0.0.1"
        if new_host.startswith("[") and new_host.endswith("]"):
            new_host = new_host[1:-1]
        if ":" in new_host:
            new_host = f"[{new_host}]"
        url = f"{parts.scheme}://{new_host}:{port or self.portal.bind_port}"
        try:  # validated again: model_copy alone would skip the checks of public_url
            portal = PortalSettings.model_validate({**self.portal.model_dump(), "public_url": url})
        except ValidationError as error:
            raise _validation_error("--host/--port", error, root="portal") from None
        return self.model_copy(update={"portal": portal})


def is_valid_name(value: str) -> bool:
    """Whether ``value`` may be a server name or a ``prefix`` string."""
    return _NAME.fullmatch(value) is not None


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1 or ``localhost``)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def expand_env(value: str, environ: Mapping[str, str], *, source: str, key: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``value``; ``$$`` is a literal ``$``.

    Raises:
        ConfigError: A referenced variable is unset and has no default.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(source, key, f"environment variable {name!r} is not set (use ${{{name}:-default}})")

    return _ENV_REF.sub(replace, value)


def _expand_servers(raw: dict[str, Any], environ: Mapping[str, str], source: str) -> None:
    servers = raw.get("servers")
    if not isinstance(servers, dict):
        return
    for name, table in servers.items():  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(table, dict):
            continue
        for field in ("url", "command", "cwd", "oauth_client_secret"):
            value = table.get(field)  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
            if isinstance(value, str):
                table[field] = expand_env(value, environ, source=source, key=f"servers.{name}.{field}")
        args = table.get("args")  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
        if isinstance(args, list):
            table["args"] = [
                expand_env(a, environ, source=source, key=f"servers.{name}.args[{i}]") if isinstance(a, str) else a
                for i, a in enumerate(args)  # pyright: ignore[reportUnknownArgumentType,reportUnknownVariableType]
            ]
        options = table.get("options")  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
        if isinstance(options, dict):
            table["options"] = _expand_deep(
                cast(dict[str, object], options), environ, source=source, key=f"servers.{name}.options"
            )
        for field in ("env", "headers"):
            mapping = table.get(field)  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
            if isinstance(mapping, dict):
                table[field] = {
                    k: expand_env(v, environ, source=source, key=f"servers.{name}.{field}.{k}")
                    if isinstance(v, str)
                    else v
                    for k, v in mapping.items()  # pyright: ignore[reportUnknownVariableType]
                }


def _expand_deep(value: object, environ: Mapping[str, str], *, source: str, key: str) -> object:
    """``expand_env`` applied to every string inside nested tables and arrays."""
    if isinstance(value, str):
        return expand_env(value, environ, source=source, key=key)
    if isinstance(value, dict):
        return {
            k: _expand_deep(v, environ, source=source, key=f"{key}.{k}")
            for k, v in cast(dict[str, object], value).items()
        }
    if isinstance(value, list):
        return [
            _expand_deep(v, environ, source=source, key=f"{key}[{i}]") for i, v in enumerate(cast(list[object], value))
        ]
    return value


def _expand_portal(raw: dict[str, Any], environ: Mapping[str, str], source: str) -> None:
    portal = raw.get("portal")
    if not isinstance(portal, dict):
        return
    database = cast(dict[str, object], portal).get("database")
    if isinstance(database, str):
        portal["database"] = expand_env(database, environ, source=source, key="portal.database")


def _expand_auth(raw: dict[str, Any], environ: Mapping[str, str], source: str) -> None:
    auth = raw.get("auth")
    if not isinstance(auth, dict):
        return
    table = cast(dict[str, Any], auth)
    clients = table.get("clients")
    if isinstance(clients, dict):
        for client_id, client in cast(dict[str, Any], clients).items():
            if isinstance(client, dict) and isinstance(secret := cast(dict[str, Any], client).get("secret"), str):
                key = f"auth.clients.{client_id}.secret"
                client["secret"] = expand_env(secret, environ, source=source, key=key)
    oidc = table.get("oidc")
    if isinstance(oidc, dict) and isinstance(secret := cast(dict[str, Any], oidc).get("client_secret"), str):
        oidc["client_secret"] = expand_env(secret, environ, source=source, key="auth.oidc.client_secret")


def _check_server_names(raw: dict[str, Any], source: str) -> None:
    """Refuse a bad server name under its own key, ``servers.NAME`` (pydantic would report ``servers``)."""
    servers = raw.get("servers")
    if not isinstance(servers, dict):
        return
    for name in servers:  # pyright: ignore[reportUnknownVariableType]
        if isinstance(name, str) and not is_valid_name(name):
            raise ConfigError(source, f"servers.{name}", f"server name {name!r} {_NAME_RULE}")


def _validation_error(source: str, error: ValidationError, *, root: str = "") -> ConfigError:
    first = error.errors()[0]
    key = ".".join([*([root] if root else []), *(str(part) for part in first["loc"])])
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "unknown key (see dockyard.example.toml for the keys this version understands)"
    more = len(error.errors()) - 1
    if more:
        reason += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(source, key, reason)


def _default_builtins() -> tuple[str, ...]:
    from servers import DEFAULT_ENABLED

    return tuple(DEFAULT_ENABLED)


def settings_from_mapping(raw: dict[str, Any], *, source: str, base_dir: Path, environ: Mapping[str, str]) -> Settings:
    """Validate a parsed configuration mapping, exactly as :func:`load_settings` validates a file.

    ``${VAR}`` references are expanded (in place) in the server fields that take them and in
    ``[portal] database``.

    Raises:
        ConfigError: The mapping is not a valid configuration.
    """
    _check_server_names(raw, source)
    _expand_portal(raw, environ, source)
    _expand_servers(raw, environ, source)
    _expand_auth(raw, environ, source)
    try:
        settings = Settings.model_validate({**raw, "source": source})
    except ValidationError as error:
        raise _validation_error(source, error) from None
    data_dir = settings.portal.data_dir
    if not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    servers = {
        name: s if s.cwd is None or s.cwd.is_absolute() else s.model_copy(update={"cwd": base_dir / s.cwd})
        for name, s in settings.servers.items()
    }
    for name in _default_builtins():  # built-ins are on unless the config names them (e.g. enabled = false)
        servers.setdefault(name, ServerSettings(builtin=name))
    policy_dir = settings.policy.dir or SHIPPED_POLICIES
    if not policy_dir.is_absolute():
        policy_dir = base_dir / policy_dir
    return settings.model_copy(
        update={
            "portal": settings.portal.model_copy(update={"data_dir": data_dir}),
            "policy": settings.policy.model_copy(update={"dir": policy_dir}),
            "servers": servers,
        }
    )


def load_settings(path: Path | None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from a TOML file, or the embedded defaults when ``path`` is None.

    Raises:
        ConfigError: The file is missing, is not TOML, or is not a valid configuration.
    """
    env = os.environ if environ is None else environ
    if path is None:
        return settings_from_mapping({}, source="<defaults>", base_dir=Path.cwd(), environ=env)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found (copy dockyard.example.toml to start)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(source, "", f"cannot read: {error}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, "", f"not valid TOML: {error}") from None
    return settings_from_mapping(raw, source=source, base_dir=path.resolve().parent, environ=env)
