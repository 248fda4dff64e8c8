"""The portal's ASGI application: ``/mcp``, ``/oauth``, health, readiness and metrics.

The policy in ``[policy] dir`` is loaded before anything starts (a broken policy stops the portal with
each problem's file and line) and reloaded while it runs (:class:`portal.policy.ReloadingPolicy`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal.admin import admin_routes
from portal.auth import AuthService, ResourceGuard
from portal.auth._credentials import upstream_credentials
from portal.auth._upstream_routes import login_cookie_user, upstream_oauth_routes
from portal.config import SHIPPED_POLICIES, Settings, is_loopback_host
from portal.endpoint import build_mcp_server
from portal.errors import ConfigError
from portal.gateway import Gateway
from portal.metrics import Metrics
from portal.policy import ReloadingPolicy, load_policy
from portal.sealing import Sealer, load_or_create_key
from portal.store import open_engine

__all__ = ["Portal", "create_app"]


@dataclass
class Portal:
    """Everything one running portal holds; ``app.state.portal`` in the ASGI app."""

    settings: Settings
    engine: Engine
    gateway: Gateway
    metrics: Metrics
    session_manager: StreamableHTTPSessionManager
    policy: ReloadingPolicy
    auth: AuthService | None = None


def _transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host and Origin checks (SECURITY.md T1): the public URL, plus loopback when bound there."""
    public = urlsplit(settings.portal.public_url)
    netloc = public.netloc
    hosts = [netloc, f"{public.hostname}:*"]
    origins = [f"{public.scheme}://{netloc}"]
    if is_loopback_host(settings.portal.bind_host):
        hosts += ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost"]
        origins += ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def _read_only(gateway: Gateway, name: str) -> bool:
    """Whether the tool clients call ``name`` declares ``readOnlyHint: true`` (enough for scope ``tools:read``)."""
    entry = gateway.catalog.tools.get(name)
    annotations = entry.definition.annotations if entry is not None else None
    return annotations is not None and annotations.read_only_hint is True


def check_startup(settings: Settings) -> None:
    """Refuse settings that are unsafe to serve.

    Raises:
        ConfigError: Auth mode ``none`` on an address other than loopback, or OAuth over plain http
            on an address other than loopback.
    """
    loopback = is_loopback_host(settings.portal.bind_host)
    if settings.auth.mode == "none" and not loopback:
        raise ConfigError(
            settings.source,
            "auth.mode",
            f"'none' serves every tool to anyone who can connect, so it is refused on "
            f"{settings.portal.bind_host!r}; bind to 127.0.0.1 or configure authentication",
        )
    if settings.auth.mode == "oauth" and not loopback and urlsplit(settings.portal.public_url).scheme != "https":
        raise ConfigError(
            settings.source,
            "portal.public_url",
            f"OAuth needs https outside loopback (tokens and passwords would cross the network in clear), got "
            f"{settings.portal.public_url!r}; put the portal behind TLS and set its https URL",
        )


def create_app(settings: Settings) -> Starlette:
    """Build the portal for ``settings``; upstreams connect when the app's lifespan starts.

    Raises:
        ConfigError: The settings are unsafe to serve.
        PolicyLoadError: The policy directory cannot be loaded (every problem with its file and line).
        StorageError: The database cannot be opened.
    """
    check_startup(settings)
    policy_dir = settings.policy.dir or SHIPPED_POLICIES
    policy = ReloadingPolicy(policy_dir, load_policy(policy_dir))
    data_dir = Path(settings.portal.data_dir)
    engine = open_engine(settings.database_url)
    metrics = Metrics()
    sealer = Sealer(load_or_create_key(data_dir / "state.key"))
    credentials = upstream_credentials(settings, engine, sealer, environ=os.environ)
    gateway = Gateway(settings, engine, metrics=metrics, sealer=sealer, policy=policy, credentials=credentials)
    server = build_mcp_server(gateway)
    manager = StreamableHTTPSessionManager(
        app=server,
        json_response=False,
        stateless=False,
        security_settings=_transport_security(settings),
        session_idle_timeout=30 * 60,
    )
    # Imported here: codemode's endpoint builds on the portal's modules, so a top-level import would cycle.
    from codemode import MontyExecutor, build_code_server, python_runtime

    executor = MontyExecutor()
    python = python_runtime(settings.codemode, data_dir=data_dir, checker=executor)
    code_manager = StreamableHTTPSessionManager(
        app=build_code_server(gateway, executor, python=python),
        json_response=False,
        stateless=False,
        security_settings=_transport_security(settings),
        session_idle_timeout=30 * 60,
    )
    auth: AuthService | None = None
    middleware: list[Middleware] = []
    if settings.auth.mode == "oauth":
        auth = AuthService(settings, engine, sealer, vault=credentials.vault)
        auth.start()
        read_only = partial(_read_only, gateway)
        url = settings.portal.public_url
        middleware.append(Middleware(ResourceGuard, tokens=auth.tokens, public_url=url, read_only_tools=read_only))
    portal = Portal(settings, engine, gateway, metrics, manager, policy, auth)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        servers = {u.name: {"state": u.state, "kind": u.kind, "error": u.last_error} for u in gateway.servers()}
        ready = gateway.ready.is_set()
        degraded = [n for n, s in servers.items() if s["state"] not in ("connected", "disabled")]
        in_force, error = policy.current, policy.last_error
        body = {
            "ready": ready,
            "degraded": degraded,
            "servers": servers,
            "tools": len(gateway.catalog.tools),
            "policy": {"version": in_force.version, "rules": len(in_force.rules), "error": error and str(error)},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(_: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncGenerator[None]:
        try:
            async with (
                gateway.running(),
                manager.run(),
                executor.running(),
                python.running() if python is not None else nullcontext(),
                code_manager.run(),
                anyio.create_task_group() as tasks,
            ):
                tasks.start_soon(partial(policy.watch, on_reload=gateway.notify_changed))
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            engine.dispose()

    app = Starlette(
        routes=[
            Route("/mcp", endpoint=StreamableHTTPASGIApp(manager)),
            Route("/mcp/code", endpoint=StreamableHTTPASGIApp(code_manager)),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *admin_routes(gateway.approvals, security=_transport_security(settings)),
            *upstream_oauth_routes(
                credentials.oauth, browser_user=login_cookie_user(auth.cookies) if auth is not None else None
            ),
            *(auth.routes(_transport_security(settings)) if auth is not None else []),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.portal = portal
    return app
