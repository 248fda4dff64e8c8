"""The portal as protected resource: every request to ``/mcp``, ``/mcp/code`` and ``/admin`` carries a token.

- A request without a token, or with one that is malformed, foreign, expired or revoked, gets 401 with
  ``WWW-Authenticate: Bearer resource_metadata="..."`` naming the RFC 9728 metadata of the resource it
  asked for (SECURITY.md R1, R2). Tokens are read from the ``Authorization`` header only.
- A request that needs a scope the token lacks gets 403 ``insufficient_scope`` with every scope it needs
  (R3). On ``/mcp`` the JSON-RPC body is read to learn what it needs -- only when the token lacks one of
  the scopes it could need, so the common case costs no parsing.
- The verified principal goes into the ASGI scope (``dockyard.principal``), where the MCP handlers, and so
  the choke point and its audit record, find it; ``scope["user"]`` carries it for the SDK, which binds
  sessions to it (T3).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

import anyio.to_thread
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal.auth._errors import InvalidTokenError
from portal.auth._scopes import SCOPES, format_scope, scopes_needed
from portal.auth._tokens import TokenService

__all__ = ["PRINCIPAL_SCOPE_KEY", "ResourceGuard", "protected_resource_metadata", "resource_paths"]

PRINCIPAL_SCOPE_KEY = "dockyard.principal"

Area = Literal["mcp", "code", "admin"]
_FULL: Mapping[Area, frozenset[str]] = {
    "mcp": frozenset({"tools:read", "tools:call"}),
    "code": frozenset({"code", "tools:read", "tools:call"}),
    "admin": frozenset({"admin"}),
}
_CHALLENGE: Mapping[Area, str] = {
    "mcp": "tools:read tools:call",
    "code": "code tools:read tools:call",
    "admin": "admin",
}

resource_paths: Mapping[str, str] = {"": "", "mcp": "/mcp", "code": "/mcp/code", "admin": "/admin"}
"""Path of each protected resource below the public URL (``""``: the whole portal)."""


def protected_resource_metadata(public_url: str, path: str) -> dict[str, Any]:
    """The RFC 9728 document of the resource at ``public_url + path``."""
    return {
        "resource": public_url + path,
        "authorization_servers": [public_url],
        "scopes_supported": list(SCOPES),
        "bearer_methods_supported": ["header"],
        "resource_name": "Dockyard",
    }


def _area(path: str) -> Area | None:
    if path == "/mcp/code" or path.startswith("/mcp/code/"):
        return "code"
    if path == "/mcp" or path.startswith("/mcp/"):
        return "mcp"
    if path == "/admin" or path.startswith("/admin/"):
        return "admin"
    return None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class ResourceGuard:
    """ASGI middleware that authenticates the protected paths and passes everything else through.

    Args:
        app: The portal's application.
        tokens: Verifies access tokens.
        public_url: The portal's public URL (its resource URLs and metadata live below it).
        read_only_tools: Whether the tool with a name declares ``readOnlyHint: true``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenService,
        public_url: str,
        read_only_tools: Callable[[str], bool],
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.public_url = public_url
        self.read_only_tools = read_only_tools

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or (area := _area(scope["path"])) is None:
            await self.app(scope, receive, send)
            return
        resource = self.public_url + resource_paths[area]
        token = _bearer(scope)
        if token is None:
            await self._refuse(send, area, 401, None, "an access token is required (Authorization: Bearer ...)")
            return
        try:
            verified = await anyio.to_thread.run_sync(lambda: self.tokens.verify(token, resource=resource))
        except InvalidTokenError as error:
            await self._refuse(send, area, 401, "invalid_token", str(error))
            return
        principal = verified.principal
        granted = principal.scopes
        if area == "admin" and "admin" not in granted:
            await self._refuse(send, area, 403, "insufficient_scope", "the admin API needs the admin scope", "admin")
            return
        if area != "admin" and scope["method"] == "POST" and not _FULL[area] <= granted:
            body, receive = await _buffer(receive)
            if body is None:
                await _plain(send, 413, "the request body is too large")
                return
            try:
                message: object = json.loads(body)
            except ValueError:
                message = None  # the MCP transport answers with a parse error
            needed = scopes_needed(message, code=area == "code", read_only=self.read_only_tools)
            if missing := needed - granted:
                need = format_scope(needed)
                text = f"this request needs the scopes {need!r}; the token lacks {format_scope(missing)!r}"
                await self._refuse(send, area, 403, "insufficient_scope", text, need)
                return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        access = AccessToken(
            token=verified.jti,  # the token itself stays here: nothing downstream can forward it (R4)
            client_id=principal.client_id or principal.subject,
            scopes=sorted(granted),
            expires_at=verified.expires_at,
            resource=verified.audience,
            subject=principal.subject,
            claims={"iss": self.tokens.issuer},
        )
        scope["user"] = AuthenticatedUser(access)
        scope["auth"] = AuthCredentials(sorted(granted))
        await self.app(scope, receive, send)

    def metadata_url(self, area: Area) -> str:
        """The RFC 9728 metadata URL of an area's resource (path-inserted)."""
        return f"{self.public_url}/.well-known/oauth-protected-resource{resource_paths[area]}"

    async def _refuse(
        self, send: Send, area: Area, status: int, error: str | None, description: str, scope: str | None = None
    ) -> None:
        parts = [f'resource_metadata="{self.metadata_url(area)}"', f'scope="{scope or _CHALLENGE[area]}"']
        if error:
            parts[:0] = [f'error="{error}"', f'error_description="{_quote(description)}"']
        body = json.dumps({"error": error or "invalid_request", "error_description": description}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", ("Bearer " + ", ".join(parts)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            kind, _, token = text.partition(" ")
            token = token.strip()
            return token if kind.lower() == "bearer" and token else None
    return None


async def _buffer(receive: Receive) -> tuple[bytes | None, Receive]:
    """Read the whole request body; returns it (None if too large) and a ``receive`` that replays it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > DEFAULT_MAX_REQUEST_BODY_SIZE:
            return None, receive
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
