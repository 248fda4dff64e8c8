"""``portal.sealing``: requestState the portal issues is authenticated (SECURITY.md T5)."""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.sealing import Sealer, TamperedStateError, load_or_create_key

KEY = bytes(range(32))
STATE = {"server": "github", "tool": "create_issue", "principal": "alice", "upstream": "opaque-Ünïcode-✓", "n": 3}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_a_sealed_value_opens_to_the_same_value(value: dict[str, Any]) -> None:
    """T5: the portal gets back exactly the state it issued."""
    assert Sealer(KEY).open(Sealer(KEY).seal(value)) == value


def test_a_sealed_value_is_a_url_safe_opaque_string() -> None:
    token = Sealer(KEY).seal(STATE)
    assert token.startswith("dy1.")
    assert set(token) <= set(string.ascii_letters + string.digits + "-_.")


def tampered(token: str) -> list[str]:
    """Every token that differs from ``token`` by one replaced, deleted or inserted character."""
    alphabet = string.ascii_letters + string.digits + "-_.=+/ é"
    variants: set[str] = set()
    for i, char in enumerate(token):
        variants.update(token[:i] + other + token[i + 1 :] for other in alphabet if other != char)
        variants.add(token[:i] + token[i + 1 :])
        variants.update(token[:i] + other + token[i:] for other in "A_.=")
    variants.update(token + other for other in "A_.=")
    variants.discard(token)
    return sorted(variants)


def test_any_modified_character_of_version_body_or_tag_is_rejected() -> None:
    """T5: tampered state is rejected, whichever part of it was changed."""
    sealer = Sealer(KEY)
    token = sealer.seal({"s": "x"})
    variants = tampered(token)
    assert len(variants) > 1000
    accepted = []
    for variant in variants:
        try:
            sealer.open(variant)
        except TamperedStateError:
            continue
        accepted.append(variant)
    assert accepted == []


def test_a_body_swapped_between_two_tokens_is_rejected() -> None:
    """T5: a client cannot graft its own state onto another request's signature."""
    sealer = Sealer(KEY)
    _, body_a, _ = sealer.seal({"principal": "alice"}).split(".")
    _, _, tag_b = sealer.seal({"principal": "mallory"}).split(".")
    with pytest.raises(TamperedStateError):
        sealer.open(f"dy1.{body_a}.{tag_b}")


def test_a_token_from_another_key_is_rejected() -> None:
    """T5: state issued by another portal (another key) is foreign."""
    token = Sealer(bytes(32)).seal(STATE)
    with pytest.raises(TamperedStateError, match="not issued by this portal"):
        Sealer(KEY).open(token)


@pytest.mark.parametrize("token", ["", "dy1", "dy1.", "dy1..", "a.b.c.d", "dy2.e30.AAAA", "...."])
def test_a_malformed_token_is_rejected(token: str) -> None:
    with pytest.raises(TamperedStateError):
        Sealer(KEY).open(token)


def test_the_key_file_is_created_with_mode_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    """T5/U3: the key that signs state is readable only by the portal's user."""
    path = tmp_path / "keys" / "state.key"
    previous = os.umask(0)
    try:
        key = load_or_create_key(path)
    finally:
        os.umask(previous)
    assert len(key) == 32
    assert path.read_bytes() == key
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_key_file_is_reused_once_created(tmp_path: Path) -> None:
    path = tmp_path / "state.key"
    key = load_or_create_key(path)
    assert load_or_create_key(path) == key
    assert load_or_create_key(tmp_path / "other.key") != key
    assert Sealer(load_or_create_key(path)).open(Sealer(key).seal(STATE)) == STATE


def test_a_key_file_that_is_too_short_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="holds 5 bytes; a state key needs 32"):
        load_or_create_key(path)
