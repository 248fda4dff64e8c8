"""Hot reload: the policy in force, swapped atomically when its files change.

:class:`ReloadingPolicy` is what the gateway holds. A background task polls the directory every second
(names, sizes and modification times; no new dependency) and loads a changed directory off the event loop.
File times are only as fine as the kernel's clock tick, so two same-sized saves within one tick look alike:
while any file is younger than two seconds, the poll compares contents too.
A directory that fails to load is logged with every problem's file and line, and the previous policy
stays in force until the files are fixed (DESIGN.md: a policy that fails to load leaves the previous one).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from portal.policy._engine import PolicyEngine
from portal.policy._errors import PolicyLoadError
from portal.policy._loader import load_policy, policy_files
from portal.policy_seam import Decision, Request
from portal.principal import Principal

__all__ = ["ReloadingPolicy"]

logger = logging.getLogger("dockyard.policy")

_Stamp = tuple[tuple[str, int, int], ...]
_SETTLED_NS = 2_000_000_000


def _stamp(directory: Path) -> _Stamp:
    try:
        stats = [(p.name, p.stat()) for p in policy_files(directory)]
    except OSError:
        return ()
    return tuple((name, stat.st_mtime_ns, stat.st_size) for name, stat in stats)


def _settled(stamp: _Stamp) -> bool:
    """Whether every file is old enough that a later save must show in its time or size."""
    horizon = time.time_ns() - _SETTLED_NS
    return all(mtime < horizon for _, mtime, _ in stamp)


def _contents(directory: Path) -> str:
    digest = hashlib.sha256()
    try:
        for path in policy_files(directory):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    except OSError as error:
        digest.update(repr(error).encode())
    return digest.hexdigest()


class ReloadingPolicy:
    """The policy loaded from ``directory``, reloaded when its files change.

    Args:
        directory: The policy directory.
        initial: The policy loaded from it at start (load errors there stop the portal instead).
    """

    def __init__(self, directory: Path, initial: PolicyEngine) -> None:
        self.directory = directory
        self.current = initial
        self.last_error: PolicyLoadError | None = None
        self._stamp = _stamp(directory)
        self._contents = _contents(directory)
        self._keyed: PolicyEngine | None = None
        self._listing_key: str | None = None

    @property
    def version(self) -> str:
        """The version of the policy in force now."""
        return self.current.version

    @property
    def listing_key(self) -> str | None:
        """The version in force, or None when a rule's condition on a listing reads the time (``now``)."""
        current = self.current
        if current is not self._keyed:
            self._keyed = current
            timed = any(r.condition is not None and "now" in r.condition.variables for r in current.rules)
            self._listing_key = None if timed else current.version
        return self._listing_key

    def decide(self, principal: Principal, request: Request) -> Decision:
        """Decide with the policy in force now."""
        return self.current.decide(principal, request)

    def reload(self) -> bool:
        """Load the directory again if its files changed since the last look.

        Returns:
            True when a new policy is now in force.
        """
        stamp = _stamp(self.directory)
        if stamp == self._stamp and _settled(stamp):
            return False
        self._stamp = stamp
        contents = _contents(self.directory)
        if contents == self._contents:
            return False
        self._contents = contents
        try:
            engine = load_policy(self.directory)
        except PolicyLoadError as error:
            self.last_error = error
            logger.error(
                "policy in %s not reloaded; version %s stays in force:\n%s", self.directory, self.current.version, error
            )
            return False
        self.last_error = None
        previous, self.current = self.current, engine
        logger.info(
            "policy reloaded from %s: version %s -> %s, %d rules in %d files",
            self.directory,
            previous.version,
            engine.version,
            len(engine.rules),
            len(engine.files),
        )
        return True

    async def watch(self, *, interval: float = 1.0, on_reload: Callable[[], Awaitable[None]] | None = None) -> None:
        """Reload whenever the files change, until cancelled; await ``on_reload`` after each new policy."""
        while True:
            await anyio.sleep(interval)
            if await anyio.to_thread.run_sync(self.reload) and on_reload is not None:
                await on_reload()

    def __repr__(self) -> str:
        return f"<ReloadingPolicy {str(self.directory)!r} version={self.current.version}>"
