"""The authorization server's HTTP endpoints: metadata, authorize (login, consent), token, and the rest.

``/.well-known/oauth-authorization-server``  RFC 8414 metadata      ``/oauth/token``       token (RFC 6749)
``/.well-known/openid-configuration``        OIDC discovery         ``/oauth/revoke``      RFC 7009
``/.well-known/oauth-protected-resource[/mcp[/code]|/admin]``  RFC 9728   ``/oauth/introspect``  RFC 7662
``/oauth/jwks``       signing keys (A8)     ``/oauth/register``   RFC 7591
``/oauth/authorize``  GET: the request, then login or consent; POST: the consent form's answer
``/oauth/login``      GET: the form; POST: the answer

Every ``/oauth/*`` request passes the same Host and Origin checks as ``/mcp`` (SECURITY.md T1); the
metadata documents and the JWKS are public, for any origin. authlib runs in a worker thread (it reads
the database); its answers become responses in ``_adapter``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio.to_thread
from authlib.oauth2.rfc6749 import OAuth2Error
from mcp.server.transport_security import TransportSecurityMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from portal.auth._adapter import BodyError, FormRequest, Reply, add_query, read_form, read_json, to_response
from portal.auth._guard import protected_resource_metadata, resource_paths
from portal.auth._ledger import Ledger
from portal.auth._pages import consent_page, error_page, login_page, page
from portal.auth._scopes import OIDC_SCOPES, SCOPES
from portal.auth._server import ConsentRequest, PortalAuthorizationServer
from portal.auth._sessions import BrowserSession, SessionCookies
from portal.auth._tokens import Owner
from portal.auth._upstream_login import CALLBACK_PATH, START_PATH, UpstreamLogin
from portal.auth._users import LoginThrottle, User, UserStore

__all__ = ["OAuthEndpoints"]

logger = logging.getLogger("portal.auth")

Handler = Callable[[Request], Awaitable[Response]]
_AUTHORIZE = "/oauth/authorize"
_FORM_FIELDS = ("csrf", "decision")


def _public(document: dict[str, Any]) -> Response:
    return JSONResponse(document, headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "max-age=300"})


def _oauth_error(status: int, error: str, description: str) -> Response:
    body = {"error": error, "error_description": description}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _safe_return(value: str | None) -> str:
    """Where to go after logging in: only back into an authorization request (no open redirect)."""
    if value and value.startswith(_AUTHORIZE + "?") and "\\" not in value and "//" not in value.split("?")[0]:
        return value
    return "/oauth/login?done=1"


class OAuthEndpoints:
    """The routes of the authorization server.

    Args:
        server: authlib's server, configured by ``_server``.
        cookies: The session and login cookies.
        users: Local user accounts.
        throttle: Limits failed logins.
        security: Host and Origin checks (T1).
        metadata: The RFC 8414 metadata document.
        jwks: Returns the current JSON Web Key Set.
        upstream: Login through an upstream OpenID Connect provider, when configured.
    """

    def __init__(
        self,
        *,
        server: PortalAuthorizationServer,
        cookies: SessionCookies,
        users: UserStore,
        throttle: LoginThrottle,
        security: TransportSecurityMiddleware,
        metadata: dict[str, Any],
        jwks: Callable[[], dict[str, Any]],
        upstream: UpstreamLogin | None = None,
    ) -> None:
        self.server = server
        self.issuer = server.issuer
        self.ledger: Ledger = server.ledger
        self.cookies = cookies
        self.users = users
        self.throttle = throttle
        self.security = security
        self.metadata = metadata
        self.jwks_document = jwks
        self.upstream = upstream

    def routes(self) -> list[Route]:
        """Every route, at the paths the metadata names."""
        prm = [
            Route(
                f"/.well-known/oauth-protected-resource{path}",
                self._resource_metadata(path),
                methods=["GET"],
            )
            for path in resource_paths.values()
        ]
        routes = [
            Route("/.well-known/oauth-authorization-server", self.as_metadata, methods=["GET"]),
            Route("/.well-known/openid-configuration", self.as_metadata, methods=["GET"]),
            *prm,
            Route("/oauth/jwks", self.jwks, methods=["GET"]),
            Route(_AUTHORIZE, self._checked(self.authorize), methods=["GET", "POST"]),
            Route("/oauth/login", self._checked(self.login), methods=["GET", "POST"]),
            Route("/oauth/logout", self._checked(self.logout), methods=["POST"]),
            Route("/oauth/token", self._checked(self.token), methods=["POST"]),
            Route("/oauth/revoke", self._checked(self.revoke), methods=["POST"]),
            Route("/oauth/introspect", self._checked(self.introspect), methods=["POST"]),
        ]
        if self.upstream is not None:
            routes.append(Route(START_PATH, self._checked(self.upstream_start), methods=["GET"]))
            routes.append(Route(CALLBACK_PATH, self._checked(self.upstream.callback), methods=["GET"]))
        if "registration_endpoint" in self.metadata:
            routes.append(Route("/oauth/register", self._checked(self.register), methods=["POST"]))
        return routes

    def _checked(self, handler: Handler) -> Handler:
        async def checked(request: Request) -> Response:
            if refused := await self.security.validate_request(request):
                return refused
            return await handler(request)

        return checked

    # -- documents --------------------------------------------------------------------------------------
    async def as_metadata(self, _: Request) -> Response:
        return _public(self.metadata)

    def _resource_metadata(self, path: str) -> Handler:
        document = protected_resource_metadata(self.issuer, path)

        async def handler(_: Request) -> Response:
            return _public(document)

        return handler

    async def jwks(self, _: Request) -> Response:
        return _public(self.jwks_document())

    # -- the authorization endpoint ---------------------------------------------------------------------
    def _with_iss(self, reply: Reply) -> Reply:
        """RFC 9207: the issuer rides along on every authorization response (SECURITY.md A7)."""
        if (location := reply.location) is not None:
            reply.location = add_query(location, {"iss": self.issuer})
        return reply

    def _refusal(self, request: FormRequest, error: OAuth2Error) -> Response:
        if error.redirect_uri:  # a verified redirect URI: the client hears the error there
            reply = self.server.error_reply(request, error)
            return to_response(self._with_iss(reply), no_store=True)
        # No trustworthy redirect URI: tell the person, never redirect (A3: no open redirects).
        return error_page("This request cannot be used", f"{error.error}: {error.description or ''}".rstrip(": "))

    async def _user(self, session: BrowserSession | None) -> User | None:
        if session is None:
            return None
        user = await anyio.to_thread.run_sync(self.users.get, session.subject)
        return user if user is not None and not user.disabled else None

    def _owner(self, user: User, session: BrowserSession) -> Owner:
        return Owner(user.name, "user", "", self.server.default_resource, user.groups, session.auth_time)

    async def authorize(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._decide(request)
        try:
            oauth = await read_form(request, base_url=self.issuer)
        except BodyError as error:
            return error_page("This request cannot be used", str(error))
        session = self.cookies.current(request)
        user = await self._user(session)
        owner = self._owner(user, session) if user is not None and session is not None else None
        try:
            consent = await anyio.to_thread.run_sync(lambda: self.server.consent_request(oauth, owner))
        except OAuth2Error as error:
            return self._refusal(oauth, error)
        if owner is None or session is None:
            target = f"{_AUTHORIZE}?{request.url.query}"
            return RedirectResponse(f"/oauth/login?{urlencode({'return_to': target})}", status_code=303)
        client, scope = consent.client, consent.scope
        prompt = _data(oauth).get("prompt") or ""
        subject = owner.subject
        remembered = await anyio.to_thread.run_sync(lambda: self.ledger.consented(subject, client.client_id, scope))
        if remembered and "consent" not in prompt.split():
            return await self._respond(oauth, consent, owner, after_post=False)
        fields = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k not in _FORM_FIELDS]
        return consent_page(
            action=_AUTHORIZE,
            csrf=self.cookies.csrf_token(session.sid, "consent"),
            client_name=client.name,
            client_id=client.client_id,
            redirect_host=_host(consent.redirect_uri),
            user=owner.subject,
            scopes=[(s, SCOPES.get(s) or OIDC_SCOPES.get(s, s)) for s in scope.split()],
            fields=fields,
            logout_csrf=self.cookies.csrf_token(session.sid, "logout"),
            return_to=f"{_AUTHORIZE}?{request.url.query}",
        )

    async def _respond(
        self, oauth: FormRequest, consent: ConsentRequest, owner: Owner | None, *, after_post: bool
    ) -> Response:
        reply = await anyio.to_thread.run_sync(lambda: self.server.authorization_response(oauth, consent, owner))
        return to_response(self._with_iss(reply), after_post=after_post)

    async def _decide(self, request: Request) -> Response:
        try:
            raw = await read_form(request, base_url=self.issuer)
        except BodyError as error:
            return error_page("This request cannot be used", str(error))
        data = _data(raw)
        session = self.cookies.current(request)
        user = await self._user(session)
        if user is None or session is None:
            return error_page("Your session has ended", "Log in again from the application.", status=403)
        if not self.cookies.check_csrf(data.get("csrf"), session.sid, "consent"):
            return error_page("This form has expired", "Go back to the application and start again.", status=403)
        pairs = [(k, v) for k, v in raw.pairs if k not in _FORM_FIELDS]
        oauth = FormRequest("GET", f"{self.issuer}{_AUTHORIZE}", raw.headers or {}, pairs)
        owner = self._owner(user, session)
        try:
            consent = await anyio.to_thread.run_sync(lambda: self.server.consent_request(oauth, owner))
        except OAuth2Error as error:
            return self._refusal(oauth, error)
        if data.get("decision") != "approve":
            return await self._respond(oauth, consent, None, after_post=True)
        client, scope = consent.client, consent.scope
        await anyio.to_thread.run_sync(lambda: self.ledger.remember_consent(owner.subject, client.client_id, scope))
        logger.info("consent: %s allowed %r (%r) scope %r", owner.subject, client.name, client.client_id, scope)
        return await self._respond(oauth, consent, owner, after_post=True)

    # -- login ------------------------------------------------------------------------------------------
    async def _login_form(
        self, return_to: str, *, error: str | None = None, user: str = "", status: int = 200
    ) -> Response:
        nonce = self.cookies.new_login_nonce()
        no_users = await anyio.to_thread.run_sync(self.users.count) == 0
        response = login_page(
            action="/oauth/login",
            csrf=self.cookies.csrf_token(nonce, "login"),
            return_to=return_to,
            error=error,
            user=user,
            no_users=no_users and self.upstream is None,
            sso_name=self.upstream.name if self.upstream is not None else None,
            sso_url=f"{START_PATH}?{urlencode({'return_to': return_to})}" if self.upstream is not None else None,
            status=status,
        )
        self.cookies.set_login_nonce(response, nonce)
        return response

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            if request.query_params.get("done") and self.cookies.current(request) is not None:
                return page("Logged in", "<h1>You are logged in</h1><p>You can close this page.</p>")
            return await self._login_form(_safe_return(request.query_params.get("return_to")))
        try:
            form = _data(await read_form(request, base_url=self.issuer))
        except BodyError as error:
            return error_page("This request cannot be used", str(error))
        return_to = _safe_return(form.get("return_to"))
        nonce = self.cookies.login_nonce(request)
        if nonce is None or not self.cookies.check_csrf(form.get("csrf"), nonce, "login"):
            return await self._login_form(return_to, error="The login form expired. Please try again.", status=403)
        name, password = (form.get("username") or "").strip(), form.get("password") or ""
        address = request.client.host if request.client else "-"
        if (wait := self.throttle.retry_after(name, address)) > 0:
            minutes = max(1, round(wait / 60))
            message = f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
            return await self._login_form(return_to, error=message, user=name, status=429)
        user = await anyio.to_thread.run_sync(lambda: self.users.authenticate(name, password))
        if user is None:
            self.throttle.failed(name, address)
            logger.info("login failed for a user name from %s", address)
            # The same words whether the user exists, is disabled or mistyped the password (A9).
            return await self._login_form(return_to, error="Wrong user name or password.", user=name, status=401)
        self.throttle.succeeded(name)
        logger.info("login: %s from %s", user.name, address)
        response = RedirectResponse(return_to, status_code=303)
        self.cookies.start(response, user.name, int(time.time()))
        return response

    async def upstream_start(self, request: Request) -> Response:
        assert self.upstream is not None
        return await self.upstream.start(request, _safe_return(request.query_params.get("return_to")))

    async def logout(self, request: Request) -> Response:
        """End this browser's session (the consent page offers it: "Not alice?"), then log in again."""
        try:
            form = _data(await read_form(request, base_url=self.issuer))
        except BodyError as error:
            return error_page("This request cannot be used", str(error))
        session = self.cookies.current(request)
        if session is not None and not self.cookies.check_csrf(form.get("csrf"), session.sid, "logout"):
            return error_page("This form has expired", "Reload the page and try again.", status=403)
        target = f"/oauth/login?{urlencode({'return_to': _safe_return(form.get('return_to'))})}"
        response = RedirectResponse(target, status_code=303)
        self.cookies.end(response)
        return response

    # -- token, revocation, introspection, registration -------------------------------------------------
    async def _endpoint(self, request: Request, call: Callable[[FormRequest], Reply]) -> Response:
        try:
            oauth = await read_form(request, base_url=self.issuer)
        except BodyError as error:
            return _oauth_error(400, "invalid_request", str(error))
        reply = await anyio.to_thread.run_sync(lambda: call(oauth))
        return to_response(reply)

    async def token(self, request: Request) -> Response:
        return await self._endpoint(request, self.server.token_reply)

    async def revoke(self, request: Request) -> Response:
        return await self._endpoint(request, lambda r: self.server.endpoint_reply("revocation", r))

    async def introspect(self, request: Request) -> Response:
        return await self._endpoint(request, lambda r: self.server.endpoint_reply("introspection", r))

    async def register(self, request: Request) -> Response:
        try:
            body = await read_json(request, base_url=self.issuer)
        except BodyError as error:
            return _oauth_error(400, "invalid_client_metadata", str(error))
        reply = await anyio.to_thread.run_sync(lambda: self.server.endpoint_reply("client_registration", body))
        return to_response(reply)


def _data(request: FormRequest) -> dict[str, str]:
    return dict(request.pairs)


def _host(uri: str | None) -> str:
    return (urlsplit(uri).hostname or uri or "") if uri else ""
