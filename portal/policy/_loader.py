"""Loading a policy directory: every ``*.yaml`` file in it, checked together, compiled once.

All files of the directory form one policy (roles and rule names are shared); subdirectories are not read.
Every problem found — YAML syntax, an unknown key, an undeclared role, a CEL condition that does not
compile, a rule name used twice — is reported with its file and line, all of them at once.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import TypedDict

import mcp_types as types
from pydantic import ValidationError

from portal.policy._conditions import CompileError, Condition, compile_condition
from portal.policy._engine import Case, Glob, Obligation, ObligationKind, PolicyEngine, Rule
from portal.policy._errors import PolicyLoadError, Problem
from portal.policy._format import (
    HINTS,
    CaseSpec,
    EgressSpec,
    Grant,
    LimitSpec,
    MatchSpec,
    PolicyFile,
    RedactSpec,
    RuleSpec,
    parse_rate,
)
from portal.policy._roles import RoleBook, RoleSource, parse_principal
from portal.policy._validation import schema_problems
from portal.policy._yaml import Document, parse_yaml
from portal.policy._yaml import Path as YamlPath
from portal.policy_seam import Limit, Redaction, Request
from portal.redaction import PATTERNS

__all__ = ["load_policy", "policy_files"]

_SUFFIXES = (".yaml", ".yml")


def policy_files(directory: Path) -> list[Path]:
    """The policy files of ``directory`` (``*.yaml``, ``*.yml``), sorted by name."""
    return sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def load_policy(directory: Path) -> PolicyEngine:
    """Load and compile every policy file in ``directory``.

    Raises:
        PolicyLoadError: The directory is missing or empty, or a file is wrong; every problem is listed
            with its file and line.
    """
    where = str(directory)
    if not directory.is_dir():
        reason = "is not a directory" if directory.exists() else "does not exist"
        raise PolicyLoadError([Problem(where, 0, f"the policy directory {reason}; create it or set [policy] dir")])
    files = policy_files(directory)
    if not files:
        hint = "copy policies/default.yaml from Dockyard to start"
        raise PolicyLoadError([Problem(where, 0, f"no policy files (*.yaml) in the policy directory; {hint}")])
    problems: list[Problem] = []
    parsed: list[tuple[Document, PolicyFile]] = []
    digest = hashlib.sha256()
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(Problem(str(path), 0, f"cannot read: {error}"))
            continue
        digest.update(f"{path.name}\0{text}\0".encode())
        document, found = parse_yaml(text, file=str(path))
        problems += found
        if document is None or found:  # checking the format of a file YAML got wrong would only add noise
            continue
        try:
            parsed.append((document, PolicyFile.model_validate(document.data)))
        except ValidationError as error:
            problems += schema_problems(document, error)
    builder = _Builder()
    for document, policy in parsed:
        builder.declare_roles(document, policy)
    for document, policy in parsed:
        builder.add(document, policy)
    problems += builder.problems
    if problems:
        raise PolicyLoadError(problems)
    rules = sorted(builder.rules, key=lambda r: (r.file, r.line))
    obligations = sorted(builder.obligations, key=lambda o: (o.file, o.line))
    return PolicyEngine(
        directory=where,
        files=[str(p) for p in files],
        rules=rules,
        obligations=obligations,
        cases=builder.cases,
        roles=sorted(builder.roles),
        book=builder.book,
        version=digest.hexdigest()[:12],
    )


class _Matched(TypedDict):
    """The fields rules and obligations share."""

    id: str
    file: str
    line: int
    roles: frozenset[str] | None
    servers: tuple[Glob, ...]
    tools: tuple[Glob, ...]
    hints: tuple[tuple[str, bool], ...]
    condition: Condition | None
    description: str


class _Builder:
    """Cross-file checks and compilation, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.roles: dict[str, tuple[str, int]] = {}
        self.rule_names: dict[str, tuple[str, int]] = {}
        self.rules: list[Rule] = []
        self.obligations: list[Obligation] = []
        self.cases: list[Case] = []
        self.book = RoleBook()

    def problem(self, document: Document, path: YamlPath, reason: str) -> None:
        self.problems.append(Problem(document.file, document.line(path), reason))

    def declare_roles(self, document: Document, policy: PolicyFile) -> None:
        for role in policy.roles:
            line = document.line(("roles", role))
            first = self.roles.get(role)
            if first is not None:
                self.problem(document, ("roles", role), f"role {role!r} is already declared at {_at(first)}")
            else:
                self.roles[role] = (document.file, line)

    def check_role(self, document: Document, path: YamlPath, role: str) -> bool:
        if role == "*" or role in self.roles:
            return True
        close = difflib.get_close_matches(role, self.roles, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " under 'roles'"
        declared = ", ".join(sorted(self.roles)) or "none"
        self.problem(document, path, f"role {role!r} is not declared (declared: {declared}){hint}")
        return False

    def add(self, document: Document, policy: PolicyFile) -> None:
        self._grants(document, policy)
        for i, spec in enumerate(policy.rules):
            self._rule(document, i, spec)
        for section, specs in (("limits", policy.limits), ("redact", policy.redact), ("egress", policy.egress)):
            for i, entry in enumerate(specs):
                self._obligation(document, (section, i), entry)
        for i, case in enumerate(policy.tests):
            self._case(document, i, case)

    def _grants(self, document: Document, policy: PolicyFile) -> None:
        p = policy.principals
        if p.local is not None:
            self._grant(document, ("principals", "local"), p.local, self.book.local, "local")
        for section, grants, book in (
            ("users", p.users, self.book.users),
            ("groups", p.groups, self.book.groups),
            ("clients", p.clients, self.book.clients),
            ("services", p.services, self.book.services),
        ):
            for name, grant in grants.items():
                path = ("principals", section, name)
                self._grant(document, path, grant, book.setdefault(name, {}), f"{section}.{name}")

    def _grant(self, document: Document, path: YamlPath, grant: Grant, into: dict[str, RoleSource], key: str) -> None:
        for j, role in enumerate(grant.roles):
            if role == "*":
                self.problem(document, (*path, "roles", j), "'*' is not a role; name the roles to grant")
            elif self.check_role(document, (*path, "roles", j), role):
                into.setdefault(role, RoleSource(key, document.file, document.line(path)))

    def _match(self, document: Document, path: YamlPath, spec: MatchSpec) -> tuple[bool, Condition | None, _Matched]:
        """Check what ``spec`` matches; the matching fields of a rule or obligation, if all is well."""
        ok = all(self.check_role(document, (*path, "roles", j), role) for j, role in enumerate(spec.roles))
        if spec.name:
            first = self.rule_names.get(spec.name)
            if first is not None:
                what = "rule name" if isinstance(spec, RuleSpec) else "name"
                self.problem(document, (*path, "name"), f"{what} {spec.name!r} is already used at {_at(first)}")
                ok = False
            else:
                self.rule_names[spec.name] = (document.file, document.line((*path, "name")))
        condition = None
        if spec.when:
            try:
                condition = compile_condition(spec.when)
            except CompileError as error:
                self.problem(document, (*path, "when"), f"condition {spec.when!r}: {error}")
                ok = False
        line = document.line(path)
        fields: _Matched = {
            "id": spec.name or f"{Path(document.file).name}:{line}",
            "file": document.file,
            "line": line,
            "roles": None if "*" in spec.roles else frozenset(spec.roles),
            "servers": tuple(Glob.compile(s) for s in spec.servers),
            "tools": tuple(Glob.compile(t) for t in spec.tools),
            "hints": tuple((HINTS[h], v) for h, v in sorted(spec.annotations.items())),
            "condition": condition,
            "description": spec.description,
        }
        return ok, condition, fields

    def _rule(self, document: Document, i: int, spec: RuleSpec) -> None:
        ok, _, fields = self._match(document, ("rules", i), spec)
        if ok:
            self.rules.append(Rule(effect=spec.effect, **fields))

    def _obligation(self, document: Document, path: YamlPath, spec: LimitSpec | RedactSpec | EgressSpec) -> None:
        ok, _, fields = self._match(document, path, spec)
        rule = fields["id"]
        kind: ObligationKind
        limits: tuple[Limit, ...] = ()
        redactions: tuple[Redaction, ...] = ()
        egress: tuple[str, ...] = ()
        if isinstance(spec, LimitSpec):
            kind = "limit"
            if not spec.name:
                self.problem(document, path, "a limit needs a 'name': its counters are kept under it")
                ok = False
            per = tuple(dict.fromkeys(spec.per))
            limits = tuple(
                Limit(rule, count, float(window), per)
                for count, window in (parse_rate(r) for r in (spec.rate, spec.quota) if r)
            )
        elif isinstance(spec, RedactSpec):
            kind = "redact"
            found = [Redaction(rule, name, PATTERNS[name]) for name in dict.fromkeys(spec.patterns)]
            for name, pattern in spec.regex.items():
                reason = _regex_problem(name, pattern)
                if reason:
                    self.problem(document, (*path, "regex", name), reason)
                    ok = False
                found.append(Redaction(rule, name, pattern))
            redactions = tuple(found)
        else:
            kind = "egress"
            egress = tuple(sorted(set(spec.hosts)))
        if ok:
            self.obligations.append(
                Obligation(kind=kind, limits=limits, redactions=redactions, egress=egress, **fields)
            )

    def _case(self, document: Document, i: int, spec: CaseSpec) -> None:
        path: YamlPath = ("tests", i)
        server = spec.server
        if not server:
            head, separator, _ = spec.tool.partition("__")
            if not separator:
                self.problem(document, (*path, "tool"), f"{spec.tool!r} has no SERVER__ prefix; give 'server:'")
                return
            server = head
        annotations = types.ToolAnnotations.model_validate(dict(spec.annotations)) if spec.annotations else None
        principal = parse_principal(
            spec.as_,
            groups=frozenset(spec.groups),
            client_id=spec.client or None,
            scopes=frozenset(spec.scopes),
        )
        self.cases.append(
            Case(
                file=document.file,
                line=document.line(path),
                name=spec.name or f"{spec.as_} {spec.method} {spec.tool}",
                principal=principal,
                request=Request(spec.method, spec.tool, server, spec.arguments, annotations),
                now=datetime.fromisoformat(spec.now) if spec.now else None,
                expect=spec.expect,
                listed=spec.listed,
                limits=None if spec.limits is None else frozenset(spec.limits),
                redacts=None if spec.redacts is None else frozenset(spec.redacts),
                egress=None if spec.egress is None else frozenset(spec.egress),
            )
        )


def _regex_problem(name: str, pattern: str) -> str:
    """Why ``pattern`` cannot be a redaction pattern, or ``""``."""
    if name in PATTERNS:
        return f"{name!r} is a built-in pattern; list it under 'patterns', or give your regex another name"
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        return f"regex {name!r}: {pattern!r} is not a valid regular expression: {error}"
    if compiled.match("") is not None:
        return f"regex {name!r}: {pattern!r} matches the empty string; it must match at least one character"
    return ""


def _at(where: tuple[str, int]) -> str:
    return f"{where[0]}:{where[1]}"
