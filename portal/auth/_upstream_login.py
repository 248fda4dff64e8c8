"""Logging in through an upstream OpenID Connect provider (``[auth.oidc]``), besides local accounts.

``GET /oauth/oidc/start?return_to=...``  sends the browser to the provider: authorization code with PKCE
S256, a random ``state`` and ``nonce`` kept in a sealed cookie that expires in ten minutes and is deleted
when used (single-use state, SECURITY.md A5).
``GET /oauth/oidc/callback``             checks ``state`` (and ``iss``, RFC 9207), exchanges the code at the
provider's token endpoint, verifies the ID token (signature by the provider's published keys, issuer,
audience, expiry, nonce), and logs the user in under their ``preferred_username`` (else ``sub``) with the
groups of the configured claim. A name taken by a local account is refused, so the provider cannot take
one over. Every fetch from the provider goes through the SSRF-safe fetcher.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from typing import Any, cast
from urllib.parse import urlencode

import anyio.to_thread
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portal.auth._errors import UserError
from portal.auth._fetch import FetchError, FetchPolicy, fetch_json, post_form
from portal.auth._pages import error_page
from portal.auth._sessions import SessionCookies
from portal.auth._users import UserStore, valid_user_name
from portal.config import OIDCSettings

__all__ = ["CALLBACK_PATH", "START_PATH", "UpstreamLogin"]

logger = logging.getLogger("portal.auth")

START_PATH = "/oauth/oidc/start"
CALLBACK_PATH = "/oauth/oidc/callback"
_STATE_TTL = 600


class UpstreamLogin:
    """The ``[auth.oidc]`` provider as a way to log in.

    Args:
        settings: The provider's settings.
        public_url: The portal's public URL (its callback lives below it).
        cookies: Session cookies (the login in progress, then the session).
        users: Where users the provider vouched for are recorded, with their groups.
        policy: Fetch limits (and the development hosts exempt from the HTTPS and address checks).
    """

    def __init__(
        self, settings: OIDCSettings, *, public_url: str, cookies: SessionCookies, users: UserStore, policy: FetchPolicy
    ) -> None:
        self.settings = settings
        self.issuer = settings.issuer.rstrip("/")
        self.callback_url = public_url + CALLBACK_PATH
        self.cookies = cookies
        self.users = users
        self.policy = policy
        self._metadata: dict[str, object] | None = None

    @property
    def name(self) -> str:
        """How the login page names the provider."""
        return self.settings.name

    async def _discovered(self) -> dict[str, object]:
        if self._metadata is None:
            document = await fetch_json(f"{self.issuer}/.well-known/openid-configuration", policy=self.policy)
            if str(document.get("issuer", "")).rstrip("/") != self.issuer:
                raise FetchError(
                    f"the provider's metadata names issuer {document.get('issuer')!r}, not {self.issuer!r}"
                )
            self._metadata = document
        return self._metadata

    async def start(self, request: Request, return_to: str) -> Response:
        """Send the browser to the provider."""
        try:
            metadata = await self._discovered()
        except FetchError as error:
            logger.warning("upstream login: cannot read the provider's metadata: %s", error)
            return error_page("Single sign-on is unavailable", "The identity provider cannot be reached.", status=502)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.callback_url,
            "scope": "openid profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        response = RedirectResponse(f"{metadata['authorization_endpoint']}?{urlencode(query)}", status_code=303)
        flow = {"state": state, "nonce": nonce, "verifier": verifier, "return_to": return_to}
        self.cookies.start_upstream(response, flow, ttl=_STATE_TTL)
        return response

    async def callback(self, request: Request) -> Response:
        """Finish the login the provider sent the browser back from."""
        flow = self.cookies.upstream(request)
        params = request.query_params
        if flow is None or not hmac.compare_digest(params.get("state", ""), flow.get("state", "")):
            return self._fail("This login expired or was already used. Start again.", status=400)
        if params.get("error"):
            return self._fail(f"The identity provider refused: {params['error']}.", status=403)
        if (iss := params.get("iss")) is not None and iss.rstrip("/") != self.issuer:
            return self._fail("The answer came from another identity provider.", status=400)
        try:
            claims = await self._id_token(params.get("code", ""), flow)
        except (FetchError, JoseError, ValueError) as error:
            logger.warning("upstream login failed: %s", error)
            return self._fail("The identity provider's answer could not be verified.", status=502)
        name = claims.get("preferred_username") or claims.get("sub")
        raw_groups: object = claims.get(self.settings.groups_claim)
        groups = (
            [g for g in cast(list[object], raw_groups) if isinstance(g, str)] if isinstance(raw_groups, list) else []
        )
        if not isinstance(name, str) or not valid_user_name(name):
            return self._fail("The identity provider gave no usable user name.", status=403)
        try:
            user = await anyio.to_thread.run_sync(lambda: self.users.upsert_external(name, groups))
        except UserError as error:
            return self._fail(str(error), status=403)
        if user.disabled:
            return self._fail("This account is disabled.", status=403)
        logger.info("login: %s through %s", user.name, self.issuer)
        response = RedirectResponse(flow.get("return_to") or "/oauth/login?done=1", status_code=303)
        self.cookies.end_upstream(response)
        self.cookies.start(response, user.name, int(time.time()))
        return response

    def _fail(self, message: str, *, status: int) -> Response:
        response = error_page("Single sign-on failed", message, status=status)
        self.cookies.end_upstream(response)
        return response

    async def _id_token(self, code: str, flow: dict[str, str]) -> dict[str, Any]:
        metadata = await self._discovered()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.callback_url,
            "code_verifier": flow["verifier"],
            "client_id": self.settings.client_id,
        }
        headers: dict[str, str] = {}
        if self.settings.client_secret:
            basic = f"{self.settings.client_id}:{self.settings.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(basic).decode()
        token = await post_form(str(metadata["token_endpoint"]), form, policy=self.policy, headers=headers)
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise ValueError("the token response has no id_token")
        keys = KeySet.import_key_set(cast(Any, await fetch_json(str(metadata["jwks_uri"]), policy=self.policy)))
        claims = dict(jwt.decode(id_token, keys).claims)
        audience: object = claims.get("aud")
        audiences: list[object] = cast(list[object], audience) if isinstance(audience, list) else [audience]
        if str(claims.get("iss", "")).rstrip("/") != self.issuer or self.settings.client_id not in audiences:
            raise ValueError("the ID token is for another issuer or audience")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp < time.time():
            raise ValueError("the ID token has expired")
        if not hmac.compare_digest(str(claims.get("nonce", "")), flow["nonce"]):
            raise ValueError("the ID token's nonce does not match this login")
        return claims
