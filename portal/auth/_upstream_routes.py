"""The portal's pages in an upstream consent round: ``/oauth/upstream/{server}/start`` and the callback."""

from __future__ import annotations

import html
from collections.abc import Callable
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from portal.auth._sessions import SessionCookies
from portal.auth._upstream_oauth import (
    CALLBACK_PATH,
    CATALOG_SUBJECT,
    CLIENT_METADATA_PATH,
    START_PATH,
    UpstreamAuthError,
    UpstreamOAuth,
)

__all__ = ["login_cookie_user", "upstream_oauth_routes"]

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the callback URL carries the code: never pass it on
    "X-Frame-Options": "DENY",
}


def _page(title: str, message: str, *, status: int) -> Response:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} - Dockyard</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}</style>"
        f"</head><body><main><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></main></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def login_cookie_user(cookies: SessionCookies) -> Callable[[Request], str | None]:
    """``browser_user`` for :func:`upstream_oauth_routes` from the portal's login cookie."""

    def who(request: Request) -> str | None:
        session = cookies.current(request)
        return f"user:{session.subject}" if session is not None else None

    return who


def upstream_oauth_routes(
    oauth: UpstreamOAuth,
    *,
    browser_user: Callable[[Request], str | None] | None = None,
    login_path: str = "/oauth/login",
) -> list[Route]:
    """The routes of the consent round (and the portal's client metadata document), mounted on the portal's app.

    Args:
        oauth: The upstream OAuth client.
        browser_user: Who is logged in to the portal in this browser, as a principal label (``user:alice``);
            with it, a consent link works only for the user it was made for, so no one can attach their own
            upstream account to someone else's portal identity by sending them a link. None when the portal
            has no logins (auth mode ``none``, loopback only).
        login_path: Where a browser that is not logged in is sent first (with ``return_to``).
    """

    async def start(request: Request) -> Response:
        server = request.path_params["server"]
        token = request.query_params.get("t", "")
        try:
            subject = oauth.link_subject(server, token)
            if browser_user is not None and subject != CATALOG_SUBJECT:
                who = browser_user(request)
                if who is None:
                    back = f"{request.url.path}?{request.url.query}"
                    return RedirectResponse(f"{login_path}?{urlencode({'return_to': back})}", status_code=303)
                if who != subject:
                    message = "This link was made for another user. Sign in as that user, or call the tool yourself."
                    return _page("Not your link", message, status=403)
            url = await oauth.begin(server, token)
        except UpstreamAuthError as error:
            return _page("Cannot start authorization", str(error), status=400)
        return RedirectResponse(url, status_code=302, headers=_HEADERS)

    async def callback(request: Request) -> Response:
        params = request.query_params
        try:
            server, _subject = await oauth.complete(
                state=params.get("state", ""), code=params.get("code"), iss=params.get("iss"), error=params.get("error")
            )
        except UpstreamAuthError as error:
            return _page("Authorization failed", str(error), status=400)
        return _page(
            "Access granted",
            f"Dockyard can now use {server!r} on your behalf. Close this page and retry in your client.",
            status=200,
        )

    async def client_metadata(_: Request) -> Response:
        return JSONResponse(oauth.client_metadata(), headers={"Cache-Control": "public, max-age=3600"})

    routes = [Route(START_PATH, start, methods=["GET"]), Route(CALLBACK_PATH, callback, methods=["GET"])]
    if oauth.client_metadata_url == oauth.public_url + CLIENT_METADATA_PATH:
        routes.append(Route(CLIENT_METADATA_PATH, client_metadata, methods=["GET"]))
    return routes
