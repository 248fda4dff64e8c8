"""Running the test cases policy files carry (``dockyard policy test``)."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from pathlib import PurePath

from portal.policy._engine import Case, PolicyEngine
from portal.policy._explain import Explanation
from portal.policy._format import Effect

__all__ = ["CaseResult", "run_cases"]


@dataclass(frozen=True, slots=True)
class CaseResult:
    """What one case got, and why."""

    case: Case
    effect: Effect
    listed: bool
    explanation: Explanation

    @property
    def passed(self) -> bool:
        """The decision is the expected one, and so are the listing and obligations when the case says."""
        return self.effect == self.case.expect and self.case.listed in (None, self.listed) and not self._obligations()

    def _obligations(self) -> list[str]:
        """What differs from the limits, redactions and egress the case expects."""
        decision, case = self.explanation.decision, self.case
        wrong: list[str] = []
        for what, expected, got in (
            ("limits", case.limits, frozenset(limit.rule for limit in decision.limits)),
            ("redactions", case.redacts, frozenset(r.name for r in decision.redactions)),
            ("egress", case.egress, frozenset(decision.egress)),
        ):
            if expected is not None and expected != got:
                wrong.append(f"expected {what} {_set(expected)}, got {_set(got)}")
        return wrong

    def render(self) -> str:
        """``ok`` or ``FAIL`` with where the case is, and for a failure the explanation."""
        case = self.case
        where = f"{PurePath(case.file).name}:{case.line}"
        if self.passed:
            return f"ok    {where}  {case.name}"
        wrong: list[str] = []
        if self.effect != case.expect:
            wrong.append(f"expected {case.expect}, got {self.effect}")
        if case.listed is not None and case.listed != self.listed:
            wrong.append(f"expected {'listed' if case.listed else 'not listed'}, got the opposite")
        wrong += self._obligations()
        body = "\n".join(f"      {line}" for line in self.explanation.render().splitlines())
        return f"FAIL  {where}  {case.name}: {'; '.join(wrong)}\n{body}"


def _set(values: AbstractSet[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def run_cases(engine: PolicyEngine) -> list[CaseResult]:
    """Run every case of ``engine`` against the whole policy, in file and line order."""
    results: list[CaseResult] = []
    for case in sorted(engine.cases, key=lambda c: (c.file, c.line)):
        explanation = engine.explain(case.principal, case.request, now=case.now)
        listing = replace(case.request, method="list", arguments=None)
        listed = engine.decide(case.principal, listing, now=case.now).allowed
        results.append(CaseResult(case, explanation.effect, listed, explanation))
    return results
