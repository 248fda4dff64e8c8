"""The login and consent pages: plain server-rendered HTML, no script, usable on a phone and with a screen reader.

Every page is sent with ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY`` (no clickjacking), a
Content-Security-Policy that allows no script at all, and ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from starlette.responses import HTMLResponse

__all__ = ["PAGE_HEADERS", "consent_page", "error_page", "login_page", "page"]

PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21}
main{max-width:26rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002}
h1{font-size:1.35rem;margin:0 0 1rem}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;
border:1px solid #767b85;border-radius:4px}
button{font-size:1rem;padding:.65rem 1.2rem;margin:1rem .5rem 0 0;border-radius:4px;border:1px solid #1b4fd1;
background:#1b4fd1;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1b4fd1}
.error{background:#fde8e8;border-left:4px solid #b42318;padding:.5rem .75rem;margin:0 0 1rem}
.note{background:#eef4ff;border-left:4px solid #1b4fd1;padding:.5rem .75rem;margin:0 0 1rem}
ul{padding-left:1.2rem} code{background:#f0f1f3;padding:0 .25rem;border-radius:3px}
@media (max-width:30rem){main{margin:0;border-radius:0;box-shadow:none}}
"""


def page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    """A complete page around ``body`` (already escaped HTML)."""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · Dockyard</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=dict(PAGE_HEADERS))


def _hidden(fields: Sequence[tuple[str, str]]) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields)


def login_page(
    *,
    action: str,
    csrf: str,
    return_to: str,
    error: str | None = None,
    user: str = "",
    no_users: bool = False,
    sso_name: str | None = None,
    sso_url: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The login form."""
    parts = ['<h1 id="title">Log in to Dockyard</h1>']
    if no_users:
        parts.append(
            '<p class="note" role="status">No user exists yet. Whoever runs this portal creates the first one '
            "on its machine with <code>dockyard users add NAME</code>, then logs in here.</p>"
        )
    if error:
        parts.append(f'<p class="error" role="alert" id="login-error">{escape(error)}</p>')
    described = ' aria-describedby="login-error"' if error else ""
    parts.append(
        f'<form method="post" action="{escape(action)}" aria-labelledby="title">'
        + _hidden([("csrf", csrf), ("return_to", return_to)])
        + '<label for="username">User name</label>'
        f'<input type="text" id="username" name="username" value="{escape(user)}" autocomplete="username" '
        f'autocapitalize="none" spellcheck="false" required{described}>'
        '<label for="password">Password</label>'
        f'<input type="password" id="password" name="password" autocomplete="current-password" required{described}>'
        '<button type="submit">Log in</button></form>'
    )
    if sso_url and sso_name:
        parts.append(f'<p><a href="{escape(sso_url)}">Log in with {escape(sso_name)}</a></p>')
    return page("Log in", "".join(parts), status=status)


def consent_page(
    *,
    action: str,
    csrf: str,
    client_name: str,
    client_id: str,
    redirect_host: str,
    user: str,
    scopes: Sequence[tuple[str, str]],
    fields: Sequence[tuple[str, str]],
    logout_csrf: str,
    return_to: str,
) -> HTMLResponse:
    """The consent form: who asks, where the grant goes, what it allows; and a way to log out first."""
    items = "".join(f"<li><strong>{escape(name)}</strong>: {escape(text)}</li>" for name, text in scopes)
    body = (
        '<h1 id="title">Allow access?</h1>'
        f"<p><strong>{escape(client_name)}</strong> wants to use your Dockyard tools as "
        f"<strong>{escape(user)}</strong>.</p>"
        f"<p>After you answer, you go back to <strong>{escape(redirect_host)}</strong>.</p>"
        f"<p>It asks to:</p><ul>{items or '<li>confirm who you are</li>'}</ul>"
        f"<p><small>Client id: <code>{escape(client_id)}</code></small></p>"
        f'<form method="post" action="{escape(action)}" aria-labelledby="title">'
        + _hidden([("csrf", csrf), *fields])
        + '<button type="submit" name="decision" value="approve">Allow</button>'
        '<button type="submit" name="decision" value="deny" class="secondary">Deny</button></form>'
        '<form method="post" action="/oauth/logout">'
        + _hidden([("csrf", logout_csrf), ("return_to", return_to)])
        + f'<p><small>Not {escape(user)}? <button type="submit" class="secondary">Log out</button></small></p></form>'
    )
    return page("Allow access?", body)


def error_page(title: str, message: str, *, status: int = 400) -> HTMLResponse:
    """A page saying what went wrong, sent when there is no safe place to redirect to."""
    return page(title, f'<h1>{escape(title)}</h1><p role="alert">{escape(message)}</p>', status=status)
