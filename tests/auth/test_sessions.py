"""Session cookies (SECURITY.md A5): ``__Host-``, Secure, HttpOnly, SameSite=Lax; sealed and unforgeable."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from portal.auth._sessions import SessionCookies
from portal.sealing import Sealer


def _request(cookie: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [(b"cookie", cookie.encode())]})


def test_over_https_the_session_cookie_is_host_prefixed_secure_httponly_and_lax() -> None:
    cookies = SessionCookies(Sealer(b"k" * 32), secure=True)
    response = Response()
    cookies.start(response, "alice", 1)
    header = next(v.decode() for k, v in response.raw_headers if k == b"set-cookie" and b"__Host-dockyard_session" in v)
    assert header.startswith("__Host-dockyard_session=")
    lowered = header.lower()
    assert "; secure" in lowered and "; httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
    assert "domain=" not in lowered


def test_a_forged_or_foreign_session_cookie_is_no_session() -> None:
    mine, theirs = SessionCookies(Sealer(b"k" * 32), secure=True), SessionCookies(Sealer(b"x" * 32), secure=True)
    response = Response()
    theirs.start(response, "alice", 1)
    value = next(v.decode() for k, v in response.raw_headers if k == b"set-cookie").split(";")[0]
    assert theirs.current(_request(value)) is not None
    assert mine.current(_request(value)) is None  # sealed by another key
    assert mine.current(_request("__Host-dockyard_session=dy1.e30.forged")) is None


def test_a_csrf_token_fits_only_its_session_and_form() -> None:
    cookies = SessionCookies(Sealer(b"k" * 32), secure=False)
    token = cookies.csrf_token("session-1", "consent")
    assert cookies.check_csrf(token, "session-1", "consent")
    assert not cookies.check_csrf(token, "session-2", "consent")
    assert not cookies.check_csrf(token, "session-1", "login")
    assert not cookies.check_csrf(None, "session-1", "consent")
