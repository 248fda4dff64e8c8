"""``portal.naming``: every name a client sees is safe, unique and stable (SECURITY.md G2)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.naming import MAX_NAME, SEPARATOR, assign_names, is_client_safe

SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What the config accepts as a server name or a prefix string: the only prefixes the catalog ever passes.
CONFIG_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}"

servers = st.from_regex(CONFIG_NAME, fullmatch=True)
prefixes = st.none() | servers
upstream_name = st.one_of(
    st.text(),  # arbitrary unicode, including the empty string
    st.text(min_size=60, max_size=300),  # too long once prefixed, or on its own
    st.text(alphabet="ab_- .é", max_size=4),  # small alphabet: many names clean to the same string
    st.text(st.characters(categories=["Cs", "Ll"]), max_size=4),  # lone surrogates, as JSON can carry them
    st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),  # already client-safe
)
upstream_names = st.lists(upstream_name, max_size=25)


@given(servers, prefixes, upstream_names)
def test_every_assigned_name_is_client_safe_and_unique(server: str, prefix: str | None, names: list[str]) -> None:
    assigned = assign_names(server, prefix, names)
    assert set(assigned) == set(names)
    assert all(SAFE.fullmatch(exposed) for exposed in assigned.values()), assigned
    assert all(is_client_safe(exposed) for exposed in assigned.values())
    assert len(set(assigned.values())) == len(assigned), assigned


@given(servers, prefixes, upstream_names, st.data())
def test_assignment_is_deterministic_and_independent_of_input_order(
    server: str, prefix: str | None, names: list[str], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(names))
    assert assign_names(server, prefix, names) == assign_names(server, prefix, shuffled)
    assert assign_names(server, prefix, names) == assign_names(server, prefix, names + names)


@given(servers, prefixes, upstream_names, st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True))
def test_a_safe_short_name_keeps_its_exact_form_whatever_else_the_upstream_lists(
    server: str, prefix: str | None, others: list[str], name: str
) -> None:
    """G2: another upstream name that cleans to the same string never takes a safe name's plain form."""
    head = f"{prefix}{SEPARATOR}" if prefix else ""
    imitators = [name.replace("_", unsafe) for unsafe in " .\né"]  # each cleans to ``name`` if it has a '_'
    assert assign_names(server, prefix, [*others, *imitators, name])[name] == head + name


@given(servers, upstream_names)
def test_adding_a_name_never_renames_a_safe_short_name(server: str, names: list[str]) -> None:
    before = assign_names(server, None, names)
    after = assign_names(server, None, [*names, *(f"{n}." for n in names)])
    assert {n: e for n, e in after.items() if n in before and is_client_safe(n)} == {
        n: e for n, e in before.items() if is_client_safe(n)
    }


@given(servers, st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True), st.from_regex(CONFIG_NAME, fullmatch=True))
def test_a_prefixed_name_is_prefix_separator_name_when_it_fits(server: str, name: str, prefix: str) -> None:
    assert assign_names(server, prefix, [name]) == {name: f"{prefix}{SEPARATOR}{name}"}


def test_unsafe_characters_become_underscores() -> None:
    assert assign_names("srv", None, ["get weather", "ünïcode.tool", "a/b:c"]) == {
        "get weather": "get_weather",
        "ünïcode.tool": "_n_code_tool",
        "a/b:c": "a_b_c",
    }


def test_the_empty_name_gets_a_safe_name() -> None:
    assert assign_names("srv", None, [""]) == {"": "_"}
    assert assign_names("srv", "p", [""]) == {"": "p___"}


def test_a_too_long_name_keeps_a_readable_head_and_a_stable_suffix() -> None:
    long = "search_" + "x" * 200
    first = assign_names("srv", "github", [long])[long]
    assert len(first) == MAX_NAME
    assert first.startswith("github__search_xxx")
    assert re.fullmatch(r".*_[0-9a-f]{8}", first)
    assert assign_names("srv", "github", ["other", long])[long] == first


def test_the_collision_suffix_depends_on_the_server() -> None:
    names = ["a b", "a.b"]
    assert assign_names("one", None, names)["a.b"] != assign_names("two", None, names)["a.b"]


def test_of_two_names_that_clean_alike_one_keeps_the_plain_form_and_the_other_a_suffix() -> None:
    assigned = assign_names("srv", None, ["a.b", "a b"])
    assert sorted(assigned.values())[0] == "a_b"
    assert re.fullmatch(r"a_b_[0-9a-f]{8}", sorted(assigned.values())[1])


@pytest.mark.parametrize("order", [["a_b", "a.b"], ["a.b", "a_b"]])
def test_a_name_that_is_already_safe_keeps_it_and_the_cleaned_one_gets_the_suffix(order: list[str]) -> None:
    assigned = assign_names("srv", None, order)
    assert assigned["a_b"] == "a_b"
    assert re.fullmatch(r"a_b_[0-9a-f]{8}", assigned["a.b"])


def test_a_lone_surrogate_in_an_upstream_name_gets_a_safe_name() -> None:
    assigned = assign_names("srv", "p", ["a\ud800", "a\udfff", "a_"])
    assert assigned["a_"] == "p__a_"
    assert all(is_client_safe(name) for name in assigned.values())
    assert len(set(assigned.values())) == 3


def test_the_empty_prefix_means_no_prefix() -> None:
    assert assign_names("srv", "", ["t"]) == {"t": "t"}


def test_is_client_safe_matches_the_model_api_rule() -> None:
    assert is_client_safe("a-b_C9")
    assert is_client_safe("x" * 64)
    assert not is_client_safe("x" * 65)
    assert not is_client_safe("")
    assert not is_client_safe("a.b")
    assert not is_client_safe("a b")


def test_is_client_safe_refuses_a_trailing_newline() -> None:
    assert not is_client_safe("tool\n")
    assert not is_client_safe("x" * 64 + "\n")


def suffix_of(server: str, upstream: str, taken: str) -> str:
    """The suffix ``upstream`` gets when ``taken`` (a safe name it cleans to) keeps the plain form."""
    exposed = assign_names(server, None, [upstream, taken])[upstream]
    assert exposed.startswith(f"{taken}_")
    return exposed.removeprefix(f"{taken}_")


@pytest.mark.parametrize(
    "imitator",
    ["a_b_{suffix}", "a.b_{suffix}", "a\tb_{suffix}", "a b_{suffix}"],
    ids=["safe, reserved first", "unsafe, sorts after", "unsafe, sorts before", "unsafe, prefix of the name"],
)
def test_names_stay_unique_when_an_upstream_name_imitates_a_collision_suffix(imitator: str) -> None:
    """G2: a name crafted to clean to another's suffixed form never makes two tools share one name."""
    suffix = suffix_of("srv", "a b", "a_b")
    names = ["a b", imitator.format(suffix=suffix), "a_b"]
    assigned = assign_names("srv", None, names)
    assert len(set(assigned.values())) == len(names), assigned
    assert all(is_client_safe(name) for name in assigned.values())
    assert assigned["a_b"] == "a_b"


def test_a_suffixed_name_that_is_taken_gets_another_stable_suffix() -> None:
    suffix = suffix_of("srv", "a b", "a_b")
    first = assign_names("srv", None, ["a b", "a_b", f"a_b_{suffix}"])
    assert re.fullmatch(r"a_b_[0-9a-f]{8}", first["a b"])
    assert first["a b"] != f"a_b_{suffix}"
    assert assign_names("srv", None, [f"a_b_{suffix}", "a_b", "a b"]) == first
