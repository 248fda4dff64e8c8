"""``portal.sealing``: requestState the portal issues is authenticated (SECURITY.md T5)."""

from __future__ import annotations

import os
import string
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal import errors
from portal.errors import DockyardError
from portal.sealing import ExpiredStateError, Sealer, StateKeyError, TamperedStateError, load_or_create_key

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
    path.chmod(0o600)
    with pytest.raises(StateKeyError) as excinfo:
        load_or_create_key(path)
    assert str(excinfo.value) == (
        f"the state key {str(path)!r} holds 5 bytes; a state key needs 32: delete the file to have a new key "
        "created (requestState values already issued then stop working)"
    )


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o610])
def test_a_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    """T5/U3: whoever can read the key can forge requestState; whoever can write it can replace it."""
    path = tmp_path / "state.key"
    load_or_create_key(path)
    path.chmod(mode)
    with pytest.raises(StateKeyError) as excinfo:
        load_or_create_key(path)
    assert str(excinfo.value) == (
        f"the state key {str(path)!r} is accessible by group or others (mode {mode:04o}); "
        f"run 'chmod 600 {path}' so only the portal's user can read it"
    )


def test_a_key_path_that_cannot_be_read_is_a_state_key_error(tmp_path: Path) -> None:
    (tmp_path / "state.key").mkdir(mode=0o700)
    with pytest.raises(StateKeyError, match="cannot read the state key"):
        load_or_create_key(tmp_path / "state.key")


def test_a_key_whose_folder_is_a_file_is_a_state_key_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "state.key"
    with pytest.raises(StateKeyError) as excinfo:
        load_or_create_key(path)
    assert str(excinfo.value) == f"cannot read the state key {str(path)!r}: Not a directory"


def create_together(path: Path, processes: int) -> list[bytes]:
    """The keys ``processes`` threads get from ``load_or_create_key(path)``, all started at once."""
    barrier = threading.Barrier(processes)
    keys: list[bytes] = []
    failures: list[BaseException] = []

    def create() -> None:
        barrier.wait(timeout=10)
        try:
            keys.append(load_or_create_key(path))
        except BaseException as failure:
            failures.append(failure)

    threads = [threading.Thread(target=create) for _ in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    return keys


def test_processes_that_create_the_key_at_the_same_time_all_get_the_same_key(tmp_path: Path) -> None:
    """T5: portals sharing a data directory start together; each must sign with the key the others use."""
    for attempt in range(10):
        path = tmp_path / f"state-{attempt}.key"
        assert create_together(path, 8) == [path.read_bytes()] * 8
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left


def test_tampered_state_errors_belong_to_the_portals_error_hierarchy() -> None:
    assert issubclass(TamperedStateError, DockyardError)
    assert issubclass(ExpiredStateError, TamperedStateError)
    assert issubclass(StateKeyError, DockyardError)
    assert TamperedStateError is errors.TamperedStateError
    assert {"ExpiredStateError", "StateKeyError", "TamperedStateError"} <= set(errors.__all__)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_value_sealed_with_a_ttl_opens_until_it_expires() -> None:
    """T5: state with a time to live is refused once that time has passed."""
    clock = Clock(1_000_000.0)
    sealer = Sealer(KEY, clock=clock)
    token = sealer.seal(STATE, ttl=60)
    assert sealer.open(token) == STATE
    clock.now += 59
    assert sealer.open(token) == STATE
    clock.now += 1
    with pytest.raises(ExpiredStateError, match="requestState has expired"):
        sealer.open(token)


def test_a_value_sealed_without_a_ttl_never_expires() -> None:
    clock = Clock(0.0)
    sealer = Sealer(KEY, clock=clock)
    token = sealer.seal(STATE)
    clock.now = 10.0**12
    assert sealer.open(token) == STATE


def test_any_modified_character_of_an_expiring_token_is_rejected() -> None:
    """T5: the expiry is signed with the value; extending it is tampering."""
    sealer = Sealer(KEY, clock=Clock(1_000_000.0))
    token = sealer.seal({"s": "x"}, ttl=60)
    assert token.startswith("dy2.")
    for variant in tampered(token):
        with pytest.raises(TamperedStateError):
            sealer.open(variant)


def test_a_tag_of_one_token_form_is_not_valid_for_the_other() -> None:
    sealer = Sealer(KEY)
    _, body, tag = sealer.seal({"exp": 1, "v": {"principal": "mallory"}}).split(".")
    with pytest.raises(TamperedStateError, match="not issued by this portal"):
        sealer.open(f"dy2.{body}.{tag}")
    _, body, tag = sealer.seal({"principal": "alice"}, ttl=60).split(".")
    with pytest.raises(TamperedStateError, match="not issued by this portal"):
        sealer.open(f"dy1.{body}.{tag}")


@pytest.mark.parametrize("ttl", [0, -1, float("nan")])
def test_a_ttl_that_is_not_positive_is_a_programming_error(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be a positive number of seconds"):
        Sealer(KEY).seal(STATE, ttl=ttl)


@pytest.mark.parametrize("token", ["dy1.\ud800.AAAA", "dy1.e30.\ud800", "dy2.\udfff.x", "dy1.e30.é"])
def test_a_token_with_characters_no_encoding_holds_is_rejected_not_a_crash(token: str) -> None:
    with pytest.raises(TamperedStateError):
        Sealer(KEY).open(token)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where no file can be created")
def test_a_key_that_cannot_be_created_is_a_state_key_error() -> None:
    path = Path("/proc/self/state.key")
    with pytest.raises(StateKeyError) as excinfo:
        load_or_create_key(path)
    assert str(excinfo.value).startswith(f"cannot create the state key {str(path)!r}: ")


def test_a_key_path_that_is_a_broken_symbolic_link_is_a_state_key_error(tmp_path: Path) -> None:
    (tmp_path / "state.key").symlink_to(tmp_path / "nowhere")
    with pytest.raises(StateKeyError, match="a broken symbolic link"):
        load_or_create_key(tmp_path / "state.key")
    assert [p.name for p in tmp_path.iterdir()] == ["state.key"]  # no temporary file left
