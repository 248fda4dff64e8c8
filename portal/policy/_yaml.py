"""YAML with line numbers: a policy file's data, and where each value sits in the file.

PyYAML's ``compose`` gives a node tree with marks; this module turns it into plain data (mappings with
string keys, lists, scalars) and a map from each value's path (``("rules", 2, "effect")``) to its line, so
every later error can name the file and line. Duplicate keys and merge keys (``<<``), which PyYAML
accepts silently, are refused; timestamps stay the strings they were written as.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from portal.policy._errors import Problem

__all__ = ["Document", "Path", "parse_yaml"]

Path = tuple[str | int, ...]
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster
_MAX_NODES = 100_000  # an alias "billion laughs" in an admin's file should fail, not hang the portal
_MERGE = "tag:yaml.org,2002:merge"
_COLLECTIONS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed file: its data and the line of each path in it."""

    file: str
    data: object
    lines: Mapping[Path, int]

    def line(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor the file has (1 for the whole file)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return 1


class _Walker:
    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:  # or CSafeLoader, which has the same API
        self.loader = loader
        self.file = file
        self.lines: dict[Path, int] = {}
        self.problems: list[Problem] = []
        self.nodes = 0
        self.active: set[int] = set()

    def problem(self, node: Node, reason: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, reason))

    def value(self, node: Node, path: Path, line: int) -> object:
        self.lines[path] = line
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise _TooBigError(node)
        if id(node) in self.active:
            self.problem(node, "an alias refers to itself")
            return None
        if isinstance(node, MappingNode | SequenceNode) and node.tag not in _COLLECTIONS:
            self.problem(node, f"unsupported tag {node.tag!r}")
            return None
        if isinstance(node, MappingNode):
            self.active.add(id(node))
            try:
                return self.mapping(node, path)
            finally:
                self.active.discard(id(node))
        if isinstance(node, SequenceNode):
            self.active.add(id(node))
            try:
                return [self.value(item, (*path, i), item.start_mark.line + 1) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        return self.scalar(node)

    def mapping(self, node: MappingNode, path: Path) -> dict[str, object]:
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                self.problem(key_node, "merge keys ('<<') are not supported; write the keys out")
                continue
            key = self.scalar(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.problem(key_node, f"keys must be strings, got {key_node.value!r}")
                continue
            if key in result:
                self.problem(key_node, f"duplicate key {key!r}")
                continue
            result[key] = self.value(value_node, (*path, key), key_node.start_mark.line + 1)
        return result

    def scalar(self, node: Node) -> object:
        value: object = self.loader.construct_object(node, deep=True)  # pyright: ignore[reportUnknownMemberType]
        if isinstance(value, dt.date | dt.datetime):
            return str(node.value)
        return value


class _TooBigError(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


def parse_yaml(text: str, *, file: str) -> tuple[Document | None, list[Problem]]:
    """Parse one YAML document.

    Returns:
        The document (None when it cannot be read at all) and the problems found, each with its line.
    """
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, [Problem(file, 1, "the file is empty; a policy file starts with 'version: 1'")]
        walker = _Walker(loader, file)
        data = walker.value(node, (), node.start_mark.line + 1)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = " ".join(part for part in (error.context, error.problem) if part)
        return None, [Problem(file, line, f"not valid YAML: {reason}")]
    except yaml.YAMLError as error:
        return None, [Problem(file, 1, f"not valid YAML: {error}")]
    except _TooBigError as error:
        too_big = f"more than {_MAX_NODES} values (aliases expanding without end?)"
        return None, [Problem(file, error.node.start_mark.line + 1, too_big)]
    finally:
        loader.dispose()
    return Document(file, data, walker.lines), walker.problems
