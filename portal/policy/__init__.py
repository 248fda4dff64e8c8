"""Scope policies: who may see and use which servers and tools, written as YAML in ``policies/``.

Load a directory with :func:`load_policy`; the :class:`PolicyEngine` it returns implements
:class:`portal.policy_seam.Policy` for the choke point, explains its decisions and carries the test cases
of its files. Besides rules, a policy has obligations (:class:`Obligation`: rate limits, result redaction,
egress allow-lists) that attach to the calls it allows. :class:`ReloadingPolicy` keeps the policy in force
and swaps in a changed directory. The file format is in :mod:`portal.policy._format`; its JSON Schema is
:func:`policy_schema`.
"""

from portal.policy._cases import CaseResult, run_cases
from portal.policy._engine import Case, Obligation, ObligationResult, PolicyEngine, Rule, RuleResult, effect_of
from portal.policy._errors import PolicyError, PolicyLoadError, PrincipalSpecError, Problem
from portal.policy._explain import Explanation
from portal.policy._format import Effect
from portal.policy._format import schema as policy_schema
from portal.policy._loader import load_policy
from portal.policy._reload import ReloadingPolicy
from portal.policy._roles import parse_principal

__all__ = [
    "Case",
    "CaseResult",
    "Effect",
    "Explanation",
    "Obligation",
    "ObligationResult",
    "PolicyEngine",
    "PolicyError",
    "PolicyLoadError",
    "PrincipalSpecError",
    "Problem",
    "ReloadingPolicy",
    "Rule",
    "RuleResult",
    "effect_of",
    "load_policy",
    "parse_principal",
    "policy_schema",
    "run_cases",
]
