"""Result redaction: a planted secret of any built-in kind never survives, wherever it sits (SECURITY.md G6, U3).

Property tests plant realistic secrets in random text and random JSON (values and keys), in every place a
result carries text: text content, structured content, embedded resources, resource links, resources read
and prompts.
"""

from __future__ import annotations

import json
import string
from typing import Any

import mcp_types as types
import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.policy_seam import Redaction
from portal.redaction import PATTERNS, label, redact, redact_text, redaction_label

ALL = [Redaction("test", name, pattern) for name, pattern in PATTERNS.items()]
ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"


def chars(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=low, max_size=high)


@st.composite
def emails(draw: st.DrawFn) -> str:
    local = draw(chars(ALNUM, 1, 3)) + draw(chars(ALNUM + "._%+-", 0, 12))
    labels = draw(st.lists(chars(string.ascii_lowercase + string.digits, 1, 10), min_size=1, max_size=3))
    return f"{local}@{'.'.join(labels)}.{draw(chars(string.ascii_lowercase, 2, 6))}"


@st.composite
def private_keys(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["", "RSA ", "EC ", "OPENSSH ", "DSA ", "ENCRYPTED "]))
    lines = draw(st.lists(chars(ALNUM + "+/", 8, 64), min_size=1, max_size=6))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    body = newline.join(lines)
    return f"-----BEGIN {kind}PRIVATE KEY-----{newline}{body}{newline}-----END {kind}PRIVATE KEY-----"


@st.composite
def jwts(draw: st.DrawFn) -> str:
    return f"eyJ{draw(chars(B64URL, 8, 40))}.eyJ{draw(chars(B64URL, 8, 120))}.{draw(chars(B64URL, 0, 86))}"


SECRETS: dict[str, st.SearchStrategy[str]] = {
    "email": emails(),
    "github_token": st.one_of(
        st.builds(lambda k, t: f"gh{k}_{t}", st.sampled_from("pousr"), chars(ALNUM, 36, 36)),
        st.builds(lambda t: f"github_pat_{t}", chars(ALNUM + "_", 82, 82)),
    ),
    "aws_access_key": st.builds(
        lambda p, t: p + t,
        st.sampled_from(["AKIA", "ASIA", "AROA", "AIDA"]),
        chars(string.ascii_uppercase + "0123456789", 16, 16),
    ),
    "private_key": private_keys(),
    "jwt": jwts(),
    "bearer": st.builds(
        lambda word, token: f"{word} {token}",
        st.sampled_from(["Bearer", "bearer", "BEARER"]),
        chars(ALNUM + "-._~+/", 16, 60),
    ),
    "slack_token": st.builds(lambda k, t: f"xox{k}-{t}", st.sampled_from("abpors"), chars(ALNUM + "-", 10, 60)),
    "google_api_key": st.builds(lambda t: f"AIza{t}", chars(ALNUM + "-_", 35, 35)),
}


def test_every_built_in_pattern_has_a_secret_generator() -> None:
    assert set(SECRETS) == set(PATTERNS)


def secret_part(kind: str, planted: str) -> str:
    """What must not survive: a bearer token's token (the word 'Bearer' may)."""
    return planted.split(" ", 1)[1] if kind == "bearer" else planted


def survives(kind: str, planted: str, redacted: str, *, noise: str) -> bool:
    """Whether the planted secret is still in ``redacted``.

    A bearer token alone is no secret to the pattern (only after 'Bearer'), so random text around it that
    happens to hold the same characters may keep them; the planted copy must still go.
    """
    part = secret_part(kind, planted)
    if kind == "bearer":
        return planted in redacted or redacted.count(part) > noise.count(part)
    return part in redacted


planted = st.sampled_from(sorted(SECRETS)).flatmap(lambda kind: st.tuples(st.just(kind), SECRETS[kind]))
noise = st.text(max_size=40)


@given(planted=planted, before=noise, after=noise)
def test_a_planted_secret_in_random_text_never_survives(planted: tuple[str, str], before: str, after: str) -> None:
    kind, secret = planted
    redacted, counts = redact_text(before + secret + after, ALL)
    assert not survives(kind, secret, redacted, noise=before + after)
    assert sum(counts.values()) >= 1


@given(planted=planted, before=noise, after=noise)
def test_only_the_pattern_asked_for_is_needed_to_remove_its_secret(
    planted: tuple[str, str], before: str, after: str
) -> None:
    kind, secret = planted
    redacted, counts = redact_text(before + secret + after, [Redaction("one", kind, PATTERNS[kind])])  # type: ignore[index]
    assert not survives(kind, secret, redacted, noise=before + after)
    assert counts.get(kind, 0) >= 1 and label(kind) in redacted


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def documents_with_a_secret(draw: st.DrawFn) -> tuple[str, str, Any]:
    """A random JSON object with a secret planted in a string value or a key, somewhere inside."""
    kind, secret = draw(planted)
    before, after = draw(noise), draw(noise)
    carrier = before + secret + after
    document: Any = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4))
    path = draw(st.lists(st.text(max_size=6), max_size=3))
    node = document
    for step in path:
        child: dict[str, Any] = {}
        if draw(st.booleans()):
            node[step] = child
        else:
            node[step] = [draw(json_values), child]
        node = child
    if draw(st.booleans()):
        node[carrier] = draw(json_values)
    else:
        node["planted"] = carrier
    return kind, secret, document


def call_result(document: Any, text: str) -> types.CallToolResult:
    resource = types.TextResourceContents(uri="file:///notes.txt", text=text, mime_type="text/plain")
    return types.CallToolResult(
        content=[
            types.TextContent(type="text", text=json.dumps(document)),
            types.TextContent(type="text", text=text),
            types.EmbeddedResource(type="resource", resource=resource),
            types.ResourceLink(type="resource_link", uri="file:///x", name="x", description=text),
            types.ImageContent(type="image", data="aGVsbG8=", mime_type="image/png"),
        ],
        structured_content=document,
    )


@given(documents_with_a_secret())
def test_a_secret_in_structured_content_and_every_text_block_never_survives(case: tuple[str, str, Any]) -> None:
    _, secret, document = case
    text = f"result: {secret} (end)"
    result, counts = redact(call_result(document, text), ALL)
    wire = result.model_dump_json(by_alias=True)
    part = secret  # for a bearer, 'Bearer TOKEN' whole: random JSON values may hold the bare token's characters
    assert part not in wire
    assert json.dumps(part)[1:-1] not in wire, "nor in its JSON-escaped form (a key inside JSON text)"
    assert sum(counts.values()) >= 5
    assert isinstance(result.content[4], types.ImageContent) and result.content[4].data == "aGVsbG8="


@given(planted=planted)
def test_resources_read_and_prompts_are_redacted_too(planted: tuple[str, str]) -> None:
    kind, secret = planted
    part = secret_part(kind, secret)
    read = types.ReadResourceResult(
        contents=[
            types.TextResourceContents(uri="file:///a", text=f"a {secret} b"),
            types.BlobResourceContents(uri="file:///b", blob="aGVsbG8="),
        ]
    )
    redacted_read, _ = redact(read, ALL)
    assert part not in redacted_read.model_dump_json()
    prompt = types.GetPromptResult(
        description=f"about {secret}",
        messages=[types.PromptMessage(role="user", content=types.TextContent(type="text", text=f"use {secret}"))],
    )
    redacted_prompt, counts = redact(prompt, ALL)
    assert part not in redacted_prompt.model_dump_json() and sum(counts.values()) == 2


def test_nothing_to_redact_returns_the_result_itself() -> None:
    result = types.CallToolResult(content=[types.TextContent(type="text", text="nothing secret here")])
    assert redact(result, ALL) == (result, {})
    assert redact(result, []) == (result, {})


def test_overlapping_secrets_are_removed_whole_under_the_name_of_the_first() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"
    text, counts = redact_text(f"Authorization: Bearer {token}\nfrom ana@example.com", ALL)
    assert text == "Authorization: [REDACTED:bearer]\nfrom [REDACTED:email]"
    assert counts == {"bearer": 1, "email": 1}


def test_two_keys_that_redact_alike_both_survive() -> None:
    result = types.CallToolResult(content=[], structured_content={"a@example.com": 1, "b@example.com": 2})
    redacted, counts = redact(result, ALL)
    assert redacted.structured_content == {"[REDACTED:email]": 1, "[REDACTED:email]'": 2}
    assert counts == {"email": 2}


@pytest.mark.timeout(60)  # a guard against a hang, not a timing claim: quadratic patterns would take hours
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 200_000, None),
        ("a." * 100_000, None),
        ("a@" * 100_000, None),
        ("-----BEGIN " * 20_000, None),
        ("bearer " * 30_000, None),
        ("eyJ" + "a" * 100_000 + ".", None),
        ("eyJa.eyJa." * 20_000, "[REDACTED:jwt]"),
        ("x@" + "a-" * 50_000 + "b.co", "[REDACTED:email]"),
    ],
    ids=["letters", "dots", "ats", "begins", "bearers", "jwt-start", "jwt-parts", "long-domain"],
)
def test_hostile_text_built_to_make_regexes_backtrack_is_redacted_in_one_pass(text: str, expected: str | None) -> None:
    """The built-in patterns never backtrack (possessive quantifiers, anchored starts), so these finish at once."""
    assert redact_text(text, ALL)[0] == (text if expected is None else expected)


def test_the_audit_label_says_what_was_redacted_and_always_fits_its_column() -> None:
    assert redaction_label("allow", {}) == "allow"
    assert redaction_label("allow", {"jwt": 1, "email": 2}) == "redact:email=2,jwt=1"
    assert redaction_label("approved:apr_1", {"email": 1}) == "approved:apr_1+redact:email=1"
    many = {name: 10 for name in PATTERNS}
    assert redaction_label("allow", many, width=32) == "redact:80"
    assert len(redaction_label("approved:apr_0123456789abcdef0123", many, width=32)) <= 32
    assert redaction_label("allow", many).count("=10") == len(PATTERNS), "the column holds every built-in's count"
