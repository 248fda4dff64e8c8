"""authlib on Starlette: requests in, responses out.

authlib's server classes are synchronous and framework-neutral: a framework integration turns its
request into an ``OAuth2Request`` and authlib's ``(status, body, headers)`` into its response. This is
that integration for Starlette, in two steps so nothing blocks the event loop: the body is read
asynchronously into a :class:`FormRequest`, then authlib (which reads the database) runs in a worker
thread, and its result comes back as a :class:`Reply`.

The URL authlib sees is built from the configured public URL, never from the request's Host header.
"""

# authlib ships no type information (see _server.py).
# pyright: reportIncompatibleMethodOverride=false, reportUnknownMemberType=false

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import JsonPayload, JsonRequest, OAuth2Payload, OAuth2Request
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

__all__ = ["MAX_BODY", "BodyError", "FormRequest", "JSONBodyRequest", "Reply", "add_query", "read_form", "to_response"]

MAX_BODY = 64 * 1024
"""Largest form or JSON body the OAuth endpoints read."""

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class BodyError(ValueError):
    """The request body is too large or not in the expected format."""


class _FormPayload(OAuth2Payload):
    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._data = {k: v for k, v in pairs}
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in pairs:
            self._datalist[key].append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class FormRequest(OAuth2Request):
    """An OAuth request whose parameters (query or form) were read already."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str], pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__(method=method, uri=uri, headers=Headers(headers=dict(headers)))  # case-insensitive
        self.pairs = list(pairs)
        self.payload = _FormPayload(pairs)

    @property
    def args(self) -> dict[str, str]:
        return cast(_FormPayload, self.payload).data if self.method == "GET" else {}

    @property
    def form(self) -> dict[str, str]:
        return cast(_FormPayload, self.payload).data if self.method != "GET" else {}


class _JSONPayload(JsonPayload):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


class JSONBodyRequest(JsonRequest):
    """A request with a JSON object body (client registration)."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str], data: dict[str, Any]) -> None:
        super().__init__(method, uri, Headers(headers=dict(headers)))
        self.payload = _JSONPayload(data)


@dataclass
class Reply:
    """What authlib answered: status, body (a dict for JSON) and headers."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])

    @property
    def location(self) -> str | None:
        """The ``Location`` header of a redirect."""
        return next((v for k, v in self.headers if k.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != "location"] + [("Location", value)]


def _uri(base_url: str, request: Request) -> str:
    query = request.url.query
    return f"{base_url}{request.url.path}" + (f"?{query}" if query else "")


async def _body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyError(f"the request body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, *, base_url: str, drop: Sequence[str] = ()) -> FormRequest:
    """The OAuth request in ``request``: its query for GET, its url-encoded form for POST.

    Raises:
        BodyError: A POST body that is too large or not ``application/x-www-form-urlencoded``.
    """
    headers = dict(request.headers)
    if request.method == "GET":
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
    else:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise BodyError(f"the body must be application/x-www-form-urlencoded, not {content_type or 'missing'!r}")
        try:
            pairs = parse_qsl((await _body(request)).decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BodyError("the body is not UTF-8") from None
    pairs = [(k, v) for k, v in pairs if k not in drop]
    return FormRequest(request.method, _uri(base_url, request), headers, pairs)


async def read_json(request: Request, *, base_url: str) -> JSONBodyRequest:
    """The JSON object body of ``request``.

    Raises:
        BodyError: Too large, not JSON, or not an object.
    """
    try:
        data: object = json.loads(await _body(request))
    except (ValueError, UnicodeDecodeError):
        raise BodyError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BodyError("the body must be a JSON object")
    return JSONBodyRequest(request.method, _uri(base_url, request), dict(request.headers), cast(dict[str, Any], data))


def add_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` added to its query."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


def to_response(reply: Reply, *, no_store: bool = True, after_post: bool = False) -> Response:
    """A Starlette response for authlib's reply. A redirect after a POST is a 303 (never a 307: A3)."""
    headers = {k: v for k, v in reply.headers if k.lower() not in ("content-type", "location")}
    if no_store:
        headers.update(NO_STORE)
    if (location := reply.location) is not None:
        return RedirectResponse(location, status_code=303 if after_post else 302, headers=headers)
    if isinstance(reply.body, dict | list):
        return JSONResponse(reply.body, status_code=reply.status, headers=headers)
    return Response(str(reply.body or ""), status_code=reply.status, headers=headers, media_type="application/json")
