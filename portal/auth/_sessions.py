"""The browser side of logging in: a sealed session cookie and CSRF tokens (SECURITY.md A5).

The session cookie is ``__Host-dockyard_session``: Secure, HttpOnly, SameSite=Lax, path ``/``, no
domain. Browsers only keep a ``__Host-`` cookie over HTTPS, so on a plain-http loopback URL (``make
serve``) it is ``dockyard_session`` without Secure -- the only case where Secure is off. Its value is
sealed (HMAC-signed, with an expiry) by the portal's state key, so any portal process sharing the data
directory can read it and no one can forge it.

A form's CSRF token is sealed too, naming the session (or, on the login form, a random nonce kept in its
own cookie) and the form's purpose, and expires with it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from portal.errors import TamperedStateError
from portal.sealing import Sealer

__all__ = ["BrowserSession", "SessionCookies"]

SESSION_TTL = 12 * 3600
FORM_TTL = 3600


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """Who is logged in in this browser."""

    subject: str
    sid: str
    auth_time: int


class SessionCookies:
    """Reads and writes the session and login cookies.

    Args:
        sealer: Signs the cookie values.
        secure: Whether the portal is served over HTTPS (Secure cookies with the ``__Host-`` prefix).
    """

    def __init__(self, sealer: Sealer, *, secure: bool) -> None:
        self.sealer = sealer
        self.secure = secure
        prefix = "__Host-" if secure else ""
        self.session_name = f"{prefix}dockyard_session"
        self.login_name = f"{prefix}dockyard_login"
        self.upstream_name = f"{prefix}dockyard_sso"

    def _set(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.secure, httponly=True, samesite="lax")

    def current(self, request: Request) -> BrowserSession | None:
        """The logged-in session, if the cookie is present, genuine and unexpired."""
        value = request.cookies.get(self.session_name)
        if not value:
            return None
        try:
            fields = self.sealer.open(value)
        except TamperedStateError:
            return None
        subject, sid, auth_time = fields.get("sub"), fields.get("sid"), fields.get("at")
        if not isinstance(subject, str) or not isinstance(sid, str) or not isinstance(auth_time, int):
            return None
        return BrowserSession(subject, sid, auth_time)

    def start(self, response: Response, subject: str, auth_time: int) -> None:
        """Log ``subject`` in on this browser (a new session id: no fixation)."""
        value = self.sealer.seal({"sub": subject, "sid": secrets.token_urlsafe(16), "at": auth_time}, ttl=SESSION_TTL)
        self._set(response, self.session_name, value, SESSION_TTL)
        response.delete_cookie(self.login_name, path="/", secure=self.secure, httponly=True, samesite="lax")

    def end(self, response: Response) -> None:
        """Log out."""
        response.delete_cookie(self.session_name, path="/", secure=self.secure, httponly=True, samesite="lax")

    def csrf_token(self, binding: str, purpose: str) -> str:
        """A CSRF token for a form of ``purpose``, bound to ``binding`` (a session id or login nonce)."""
        return self.sealer.seal({"csrf": binding, "for": purpose}, ttl=FORM_TTL)

    def check_csrf(self, token: str | None, binding: str, purpose: str) -> bool:
        """Whether ``token`` was issued by :meth:`csrf_token` for this binding and purpose, and is unexpired."""
        if not token:
            return False
        try:
            fields = self.sealer.open(token)
        except TamperedStateError:
            return False
        return fields.get("csrf") == binding and fields.get("for") == purpose

    def login_nonce(self, request: Request) -> str | None:
        """The nonce of the login form's cookie."""
        return request.cookies.get(self.login_name) or None

    @staticmethod
    def new_login_nonce() -> str:
        """A fresh nonce for a login form (set it with :meth:`set_login_nonce`)."""
        return secrets.token_urlsafe(16)

    def set_login_nonce(self, response: Response, nonce: str) -> None:
        """Remember the login form's nonce in its cookie."""
        self._set(response, self.login_name, nonce, FORM_TTL)

    def start_upstream(self, response: Response, state: dict[str, str], *, ttl: int) -> None:
        """Remember an upstream login in progress (its state, nonce, PKCE verifier), sealed, for ``ttl`` seconds."""
        self._set(response, self.upstream_name, self.sealer.seal(dict(state), ttl=ttl), ttl)

    def upstream(self, request: Request) -> dict[str, str] | None:
        """The upstream login in progress in this browser, if genuine and unexpired."""
        value = request.cookies.get(self.upstream_name)
        if not value:
            return None
        try:
            fields = self.sealer.open(value)
        except TamperedStateError:
            return None
        return {k: v for k, v in fields.items() if isinstance(v, str)}

    def end_upstream(self, response: Response) -> None:
        """Forget the upstream login in progress: its state is single-use."""
        response.delete_cookie(self.upstream_name, path="/", secure=self.secure, httponly=True, samesite="lax")
