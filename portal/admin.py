"""The admin HTTP API: ``/admin/approvals``, JSON in and out.

``GET  /admin/approvals[?status=pending|approved|denied|consumed|expired|all][&limit=N]``  held calls
``GET  /admin/approvals/{id}``                         one held call, with its arguments
``POST /admin/approvals/{id}/approve``  ``{"note": "..."}`` (optional)  approve a pending call
``POST /admin/approvals/{id}/deny``     ``{"note": "..."}`` (optional)  deny it

Who may use it: with ``[auth] mode = "oauth"`` (the default) a bearer token with the ``admin`` scope
(``portal/auth``'s guard refuses anything else before these handlers run), and decisions name that
principal; with ``[auth] mode = "none"`` the portal only listens on loopback and the local user is the
admin. A browser page must not be able to drive it (CSRF, DNS rebinding): the same Host and Origin
checks as ``/mcp`` apply (SECURITY.md T1), and a decision must be a POST with ``Content-Type:
application/json``, which no cross-site form can send without a CORS preflight this API never grants.
"""

from __future__ import annotations

import json
from typing import Any, cast, get_args

import anyio
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal.approvals import ApprovalStatus, ApprovalStore
from portal.errors import ApprovalError
from portal.principal import Principal

__all__ = ["admin_routes"]

_STATUSES = get_args(ApprovalStatus)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


class _AdminAPI:
    def __init__(self, store: ApprovalStore, security: TransportSecuritySettings) -> None:
        self.store = store
        self.security = TransportSecurityMiddleware(security)

    async def list_approvals(self, request: Request) -> Response:
        if refused := await self.security.validate_request(request):
            return refused
        status = request.query_params.get("status", "pending")
        if status != "all" and status not in _STATUSES:
            return _error(400, f"status must be one of {', '.join(_STATUSES)} or all, got {status!r}")
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return _error(400, f"limit must be a whole number, got {request.query_params['limit']!r}")
        chosen = None if status == "all" else cast(ApprovalStatus, status)
        found = await anyio.to_thread.run_sync(lambda: self.store.list(status=chosen, limit=max(1, min(limit, 1000))))
        return JSONResponse({"approvals": [a.as_json() for a in found]})

    async def show_approval(self, request: Request) -> Response:
        if refused := await self.security.validate_request(request):
            return refused
        try:
            approval = await anyio.to_thread.run_sync(self.store.get, request.path_params["id"])
        except ApprovalError as error:
            return _error(404, str(error))
        return JSONResponse(approval.as_json())

    async def decide(self, request: Request) -> Response:
        if refused := await self.security.validate_request(request, is_post=True):
            return refused
        decision, approval_id = request.path_params["decision"], request.path_params["id"]
        if decision not in ("approve", "deny"):
            return _error(404, f"no such action {decision!r}: approve or deny")
        try:
            body: Any = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "the body is not JSON")
        note: Any = cast(dict[str, Any], body).get("note") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not (note is None or isinstance(note, str)):
            return _error(400, 'the body must be a JSON object like {"note": "why"}')
        try:
            await anyio.to_thread.run_sync(self.store.get, approval_id)
        except ApprovalError as error:
            return _error(404, str(error))
        approve = decision == "approve"
        # With OAuth on, the guard put the verified admin here (the admin scope was required to get this far).
        principal = request.scope.get("dockyard.principal")
        by = f"http:{principal.label}" if isinstance(principal, Principal) else "http:local"
        try:
            decided = await anyio.to_thread.run_sync(
                lambda: self.store.decide(approval_id, approve=approve, by=by, note=note)
            )
        except ApprovalError as error:
            return _error(409, str(error))
        return JSONResponse(decided.as_json())


def admin_routes(store: ApprovalStore, *, security: TransportSecuritySettings) -> list[Route]:
    """The admin API's routes over ``store``, behind the same Host/Origin checks as ``/mcp``."""
    api = _AdminAPI(store, security)
    return [
        Route("/admin/approvals", api.list_approvals, methods=["GET"]),
        Route("/admin/approvals/{id}", api.show_approval, methods=["GET"]),
        Route("/admin/approvals/{id}/{decision}", api.decide, methods=["POST"]),
    ]
