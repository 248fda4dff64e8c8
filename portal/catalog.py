"""The federated catalog: every upstream's tools, prompts and resources under client-safe, unique names.

A :class:`Catalog` is an immutable snapshot, rebuilt whenever an upstream connects, fails or reports a
list change. Tool names are ``PREFIX__tool`` (see :mod:`portal.naming`); a server with ``prefix = false``
keeps its upstream names, and a name already taken by a server that sorts earlier is a conflict: the tool
is left out and the server reports the clash. Resource URIs stay as the upstream gave them unless two
servers list the same URI; the later one is then exposed as ``dockyard+SERVER:<original>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import mcp_types as types
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from portal.naming import assign_names
from portal.pins import PinStore
from portal.upstreams import Upstream

__all__ = ["Catalog", "CatalogEntry", "CatalogResource", "CatalogTemplate", "build_catalog"]

T = TypeVar("T", types.Tool, types.Prompt)


@dataclass(frozen=True, slots=True)
class CatalogEntry(Generic[T]):
    """A tool or prompt as clients see it, with the upstream it comes from."""

    name: str
    server: str
    upstream_name: str
    definition: T


@dataclass(frozen=True, slots=True)
class CatalogResource:
    """A resource as clients see it."""

    uri: str
    server: str
    upstream_uri: str
    definition: types.Resource


@dataclass(frozen=True, slots=True)
class CatalogTemplate:
    """A resource template; reads of matching URIs go to ``server``."""

    server: str
    definition: types.ResourceTemplate
    matcher: UriTemplate | None


@dataclass(frozen=True)
class Catalog:
    """One consistent view of everything the portal federates."""

    tools: Mapping[str, CatalogEntry[types.Tool]] = field(default_factory=dict[str, CatalogEntry[types.Tool]])
    prompts: Mapping[str, CatalogEntry[types.Prompt]] = field(default_factory=dict[str, CatalogEntry[types.Prompt]])
    resources: Mapping[str, CatalogResource] = field(default_factory=dict[str, CatalogResource])
    templates: tuple[CatalogTemplate, ...] = ()
    withheld: Mapping[str, tuple[str, str]] = field(default_factory=dict[str, tuple[str, str]])
    """Exposed name → ``(server, upstream name)`` of tools held back because their definition changed (G3)."""
    offline: Mapping[str, str] = field(default_factory=dict[str, str])
    """Exposed name → server of tools whose server is down right now (known from its last listing)."""
    conflicts: Mapping[str, tuple[str, ...]] = field(default_factory=dict[str, tuple[str, ...]])
    """Server → messages about names it could not get."""

    def resolve_resource(self, uri: str) -> tuple[str, str] | None:
        """The ``(server, upstream URI)`` that serves ``uri``, or None."""
        entry = self.resources.get(uri)
        if entry is not None:
            return entry.server, entry.upstream_uri
        if uri.startswith("dockyard+"):
            server, _, original = uri.removeprefix("dockyard+").partition(":")
            return (server, original) if original else None
        for template in self.templates:
            if template.matcher is not None and template.matcher.match(uri) is not None:
                return template.server, uri
        return None

    def server_of_template(self, uri_template: str) -> str | None:
        """The server that listed a resource template, by its exact template string."""
        for template in self.templates:
            if template.definition.uri_template == uri_template:
                return template.server
        return None


def _prefix(upstream: Upstream) -> str | None:
    prefix = upstream.settings.prefix
    if prefix is True:
        return upstream.name
    if prefix is False:
        return None
    return prefix


def _place(
    upstream: Upstream,
    items: Iterable[T],
    names: Mapping[str, str],
    into: dict[str, CatalogEntry[T]],
    conflicts: list[str],
    what: str,
) -> None:
    for item in items:
        exposed = names[item.name]
        if exposed in into:
            owner = into[exposed].server
            conflicts.append(f"{what} {exposed!r} is already provided by server {owner!r}; set a prefix on one of them")
            continue
        definition = item if exposed == item.name else item.model_copy(update={"name": exposed})
        into[exposed] = CatalogEntry(exposed, upstream.name, item.name, definition)


def build_catalog(upstreams: Iterable[Upstream], pins: PinStore) -> Catalog:
    """Build a snapshot from the connected upstreams. Blocking (pins live in the database)."""
    tools: dict[str, CatalogEntry[types.Tool]] = {}
    prompts: dict[str, CatalogEntry[types.Prompt]] = {}
    resources: dict[str, CatalogResource] = {}
    templates: list[CatalogTemplate] = []
    withheld: dict[str, tuple[str, str]] = {}
    conflicts: dict[str, tuple[str, ...]] = {}
    offline: dict[str, str] = {}
    # Prefixed servers first, so an unprefixed server can never take a name a prefixed one would own.
    ordered = sorted(upstreams, key=lambda u: (u.settings.prefix is False, u.name))
    for upstream in ordered:
        if not upstream.connected:
            known = assign_names(upstream.name, _prefix(upstream), (t.name for t in upstream.known_tools))
            offline.update({name: upstream.name for name in known.values()})
            continue
        listing = upstream.listing
        messages: list[str] = []
        check = pins.check(upstream.name, listing.tools)
        # Names come from the full listing, so accepting a withheld tool never renames another one.
        tool_names = assign_names(upstream.name, _prefix(upstream), (t.name for t in listing.tools))
        for tool in check.withheld:
            withheld[tool_names[tool.name]] = (upstream.name, tool.name)
        _place(upstream, check.approved, tool_names, tools, messages, "tool")
        prompt_names = assign_names(upstream.name, _prefix(upstream), (p.name for p in listing.prompts))
        _place(upstream, listing.prompts, prompt_names, prompts, messages, "prompt")
        for resource in listing.resources:
            uri = str(resource.uri)
            exposed = uri if uri not in resources else f"dockyard+{upstream.name}:{uri}"
            definition = resource if exposed == uri else resource.model_copy(update={"uri": exposed})
            resources[exposed] = CatalogResource(exposed, upstream.name, uri, definition)
        for template in listing.templates:
            try:
                matcher: UriTemplate | None = UriTemplate.parse(template.uri_template)
            except InvalidUriTemplate:
                matcher = None
                messages.append(f"resource template {template.uri_template!r} cannot be parsed")
            templates.append(CatalogTemplate(upstream.name, template, matcher))
        if messages:
            conflicts[upstream.name] = tuple(messages)
    offline = {name: server for name, server in offline.items() if name not in tools}
    return Catalog(tools, prompts, resources, tuple(templates), withheld, offline, conflicts)
