"""The SSRF-safe fetcher refuses what it must (A4, U1), adversarially, and fetches what it may."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Sequence

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from portal.auth._fetch import BlockedURLError, FetchError, FetchPolicy, check_address, fetch_json, post_form
from tests.auth.serving import serving

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _doc(request: Request) -> Response:
    return JSONResponse({"ok": True, "host": request.headers.get("host")})


async def _html(request: Request) -> Response:
    return PlainTextResponse("<html></html>", media_type="text/html")


async def _big(request: Request) -> Response:
    return Response(b'{"pad": "' + b"x" * 100_000 + b'"}', media_type="application/json")


async def _big_chunked(request: Request) -> Response:
    from starlette.responses import StreamingResponse

    async def body() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    return StreamingResponse(body(), media_type="application/json")


async def _slow(request: Request) -> Response:
    await anyio.Event().wait()  # never answers; the fetcher's time limit must end the exchange
    raise AssertionError


async def _redirect(request: Request) -> Response:
    return RedirectResponse(request.query_params["to"], status_code=int(request.query_params.get("code", "302")))


async def _token(request: Request) -> Response:
    form = await request.form()
    if form.get("grant_type") != "authorization_code":
        return JSONResponse({"error": "unsupported_grant_type", "error_description": "nope"}, status_code=400)
    return JSONResponse({"access_token": "t", "got": dict(form)})


APP = Starlette(
    routes=[
        Route("/doc", _doc),
        Route("/html", _html),
        Route("/big", _big),
        Route("/big-chunked", _big_chunked),
        Route("/slow", _slow),
        Route("/redirect", _redirect, methods=["GET", "POST"]),
        Route("/token", _token, methods=["POST"]),
    ]
)

DEV = FetchPolicy(insecure_hosts=frozenset({"127.0.0.1"}), timeout=2.0)


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with serving(APP) as url:
        yield url


def resolving(mapping: dict[str, Sequence[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> Sequence[str]:
        return mapping[host]

    return resolve


# --- address classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "0.0.0.0",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # CGNAT
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "ff0e::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "2001:db8::1",  # documentation
        "not-an-address",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(BlockedURLError):
        check_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"])
def test_public_addresses_pass(address: str) -> None:
    check_address(address)


# --- URLs refused before any connection -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/doc",  # plain HTTP
        "ftp://example.com/doc",
        "file:///etc/passwd",
        "https://127.0.0.1/doc",
        "https://[::1]/doc",
        "https://[::ffff:127.0.0.1]/doc",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/doc",
        "https://10.1.2.3/doc",
        "https://100.100.100.200/doc",  # CGNAT (Alibaba metadata)
        "https://2130706433/doc",  # 127.0.0.1 in decimal
        "https://0x7f000001/doc",
        "https://0177.0.0.1/doc",  # octal
        "https://user:pass@example.com/doc",
    ],
)
async def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(BlockedURLError):
        await fetch_json(url, policy=FetchPolicy())


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(BlockedURLError, match="loopback"):
        await fetch_json("https://localhost/doc", policy=FetchPolicy())


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.5"],
        ["169.254.169.254"],
        ["93.184.216.34", "127.0.0.1"],  # one bad address among good ones is enough
        ["2606:4700:4700::1111", "::ffff:192.168.0.1"],
        ["fd00::5"],
    ],
)
async def test_a_name_resolving_to_any_private_address_is_refused(addresses: list[str]) -> None:
    policy = FetchPolicy(resolver=resolving({"cimd.example": addresses}))
    with pytest.raises(BlockedURLError):
        await fetch_json("https://cimd.example/client.json", policy=policy)


async def test_http_is_refused_even_for_a_public_address() -> None:
    policy = FetchPolicy(resolver=resolving({"cimd.example": ["93.184.216.34"]}))
    with pytest.raises(BlockedURLError, match="not an https URL"):
        await fetch_json("http://cimd.example/client.json", policy=policy)


# --- against a real server on loopback (admitted by the development allow-list) ---------------------------


async def test_an_allow_listed_loopback_host_is_fetched(base: str) -> None:
    assert (await fetch_json(f"{base}/doc", policy=DEV))["ok"] is True


async def test_loopback_is_refused_without_the_allow_list(base: str) -> None:
    with pytest.raises(BlockedURLError):
        await fetch_json(f"{base}/doc", policy=FetchPolicy())


async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(base: str) -> None:
    port = base.rsplit(":", 1)[1]
    calls: list[str] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return ["127.0.0.1"]

    policy = FetchPolicy(insecure_hosts=frozenset({"cimd.example"}), resolver=resolve)
    document = await fetch_json(f"http://cimd.example:{port}/doc", policy=policy)
    assert document["host"] == f"cimd.example:{port}"
    assert calls == ["cimd.example"]  # resolved once: nothing re-resolves between check and connect


@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.2/doc",  # loopback, but not the allow-listed name
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/doc",
        "https://localhost/doc",
        "https://10.0.0.1/",
        "http://example.com/",
    ],
)
async def test_a_redirect_to_a_private_address_is_refused(base: str, target: str) -> None:
    with pytest.raises(BlockedURLError):
        await fetch_json(f"{base}/redirect?to={target}", policy=DEV)


async def test_a_redirect_to_an_allowed_url_is_followed_and_rechecked(base: str) -> None:
    document = await fetch_json(f"{base}/redirect?to={base}/doc", policy=DEV)
    assert document["ok"] is True


async def test_redirects_are_refused_when_the_policy_allows_none(base: str) -> None:
    policy = FetchPolicy(insecure_hosts=frozenset({"127.0.0.1"}), max_redirects=0)
    with pytest.raises(FetchError, match="redirected more than 0 times"):
        await fetch_json(f"{base}/redirect?to={base}/doc", policy=policy)


async def test_a_redirect_loop_stops_at_the_limit(base: str) -> None:
    loop = f"{base}/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/redirect%25253Fto%25253D/doc"
    with pytest.raises(FetchError, match="redirected more than 2 times"):
        await fetch_json(loop, policy=FetchPolicy(insecure_hosts=frozenset({"127.0.0.1"}), max_redirects=2))


async def test_an_oversized_document_is_refused(base: str) -> None:
    policy = FetchPolicy(insecure_hosts=frozenset({"127.0.0.1"}), max_bytes=10_000)
    with pytest.raises(FetchError, match="more than"):
        await fetch_json(f"{base}/big", policy=policy)


async def test_an_oversized_document_without_a_length_is_cut_off(base: str) -> None:
    policy = FetchPolicy(insecure_hosts=frozenset({"127.0.0.1"}), max_bytes=10_000)
    with pytest.raises(FetchError, match="more than the 10000 bytes"):
        await fetch_json(f"{base}/big-chunked", policy=policy)


async def test_a_slow_server_hits_the_time_limit(base: str) -> None:
    policy = FetchPolicy(insecure_hosts=frozenset({"127.0.0.1"}), timeout=0.3)
    with anyio.fail_after(5), pytest.raises(FetchError, match="did not answer within"):
        await fetch_json(f"{base}/slow", policy=policy)


async def test_a_document_that_is_not_json_is_refused(base: str) -> None:
    with pytest.raises(FetchError, match="not application/json"):
        await fetch_json(f"{base}/html", policy=DEV)


async def test_an_error_status_is_an_error(base: str) -> None:
    with pytest.raises(FetchError, match="404"):
        await fetch_json(f"{base}/nothing", policy=DEV)


async def test_a_form_post_returns_the_json_answer_and_oauth_errors_name_their_code(base: str) -> None:
    answer = await post_form(f"{base}/token", {"grant_type": "authorization_code", "code": "c"}, policy=DEV)
    assert answer["access_token"] == "t"
    with pytest.raises(FetchError, match="unsupported_grant_type"):
        await post_form(f"{base}/token", {"grant_type": "password"}, policy=DEV)


async def test_a_redirected_post_is_refused(base: str) -> None:
    with pytest.raises(FetchError, match="redirected a POST"):
        await post_form(f"{base}/redirect?to={base}/token&code=307", {"grant_type": "x"}, policy=DEV)


async def test_every_checked_address_is_tried_in_order_when_one_refuses_the_connection(base: str) -> None:
    port = base.rsplit(":", 1)[1]
    # The server listens on 127.0.0.1 only: ::1 refuses, and the next checked address is used.
    policy = FetchPolicy(
        insecure_hosts=frozenset({"cimd.example"}), resolver=resolving({"cimd.example": ["::1", "127.0.0.1"]})
    )
    document = await fetch_json(f"http://cimd.example:{port}/doc", policy=policy)
    assert document["host"] == f"cimd.example:{port}"


_NON_PUBLIC_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
]


@given(
    network=st.sampled_from(_NON_PUBLIC_V4),
    offset=st.integers(min_value=0, max_value=2**32 - 1),
    form=st.sampled_from(["plain", "mapped", "compatible", "6to4", "nat64"]),
)
def test_no_form_of_a_non_public_ipv4_address_passes(network: str, offset: int, form: str) -> None:
    net = ipaddress.IPv4Network(network)
    v4 = net[offset % net.num_addresses]
    packed = int(v4)
    address = {
        "plain": str(v4),
        "mapped": f"::ffff:{v4}",
        "compatible": str(ipaddress.IPv6Address(packed)) if packed > 1 else f"::ffff:{v4}",
        "6to4": str(ipaddress.IPv6Address((0x2002 << 112) | (packed << 80))),
        "nat64": str(ipaddress.IPv6Address((0x0064FF9B << 96) | packed)),
    }[form]
    with pytest.raises(BlockedURLError):
        check_address(address)
