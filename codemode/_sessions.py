"""Monty sessions ready for a script: checked out, the SDK imported, the type checker warmed up.

Monty type-checks each fed snippet in the session's worker, and the checker warms up per session: the
first snippets that touch the SDK's stubs and the builtins cost ~10-15 ms each, later ones ~1 ms
(``bench/codemode`` measures it). So after each run :class:`Sessions` prepares the next session for the
same SDK and limits in the background — a fresh checkout, so no state of an earlier script, whose prelude
(``import <namespace>`` per namespace, ``ToolError = OSError``) and a warm-up definition have already
been fed and checked — and the next run with that SDK only has its own script checked on the request path.

One session is kept ready at a time, since it holds a worker. A run with another SDK or other limits
prepares its own inline, as every run did before, while the ready one waits (closing it first would cost
that run ~10 ms more: the worker is torn down); afterwards the ready one is replaced by one for the SDK of
that run. Only when the pool has no worker to spare is the ready session closed before the run. The
executor answers every SDK call itself from the interpreter's snapshots, so a session carries no hook and
any run may take it; a paused run is resumed in a :meth:`Sessions.fresh` session, which has nothing fed.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import pydantic_monty as monty

from codemode._sdk import GeneratedSdk, SdkFunction

__all__ = ["SCRIPT_NAME", "SDK_TOOL_ERROR", "Sessions", "module_stubs"]

SCRIPT_NAME = "script.py"
SDK_TOOL_ERROR = "OSError"
"""What ``ToolError`` is inside the script: the builtin a host ``ToolError`` crosses as."""

_WARM_UP = """\
def _dockyard_warm_up(values: list[int], names: dict[str, str]) -> str:
    total: int = 0
    for i, value in enumerate(sorted(values)):
        total += len(str(value)) + len([i]) + int(1.5) + abs(-i) + max(i, 1) + min(values) + sum(values)
    text = " ".join(names.keys()).split(",")[0].strip().lower().replace("a", "b")
    found = {k: v for k, v in names.items() if k in text and isinstance(v, str)}
    return f"{total} {text} {found} {list(zip(values, names))} {round(1.5)}"
"""
"""Fed (and so type-checked) before a script: it makes the checker resolve the builtins most scripts use."""


def module_stubs(sdk: GeneratedSdk) -> dict[str, str]:
    """The ``.pyi`` source of each namespace as a module: the SDK's type definitions and its functions."""
    namespaces = list(dict.fromkeys(f.namespace for f in sdk.functions))
    starts = [i for ns in namespaces if (i := sdk.source.find(f"\nclass {ns}:\n")) >= 0]
    prelude = sdk.source[: min(starts)] if starts else sdk.source
    stubs: dict[str, str] = {}
    for ns in namespaces:
        functions = [f.stub.removeprefix("@staticmethod\n") for f in sdk.functions if f.namespace == ns]
        stubs[ns] = prelude + "\n\n" + "\n\n".join(functions) + "\n"
    return stubs


def _driven(function: SdkFunction) -> Callable[..., Awaitable[object]]:
    """The host side of an SDK function: never called, since the executor answers every call itself."""

    async def call(*args: object, **kwargs: object) -> object:
        raise RuntimeError(f"{function.target} was called outside a run driven by the executor")

    return call


@dataclass(eq=False)
class _Ready:
    sdk: GeneratedSdk
    limits: monty.ResourceLimits
    session: monty.AsyncMontySession | None = None
    prepared: anyio.Event = field(default_factory=anyio.Event)
    """Set once the session is ready, or preparing it failed (``session`` stays None)."""
    done: anyio.Event = field(default_factory=anyio.Event)
    """Set when the run that took the session is over (or the session is discarded): return the worker."""
    finished: anyio.Event = field(default_factory=anyio.Event)
    """Set when the session is closed and its worker back in the pool."""

    def discard(self) -> None:
        # Not cancelled: a session closed mid-feed costs its worker (the pool replaces it), which is
        # dearer than letting the preparation finish and closing the session normally.
        self.done.set()


class Sessions:
    """Hands out sessions with the SDK imported, keeping the next one ready for the SDK last used.

    Args:
        pool: The worker pool.
        tasks: Where the next session is prepared; cancelling it (at shutdown) closes a ready session.
        capacity: The pool's most workers; with one, no session is kept ready (it would hold the only one).
        keep_ready: Prepare the next session in the background; without it, every run prepares its own.
    """

    def __init__(
        self, pool: monty.AsyncMonty, tasks: anyio.abc.TaskGroup, *, capacity: int, keep_ready: bool = True
    ) -> None:
        self._pool = pool
        self._tasks = tasks
        self._capacity = capacity
        self._keep_ready = keep_ready and capacity > 1
        self._ready: _Ready | None = None
        self._busy = 0

    @asynccontextmanager
    async def session(self, sdk: GeneratedSdk, limits: monty.ResourceLimits) -> AsyncGenerator[monty.AsyncMontySession]:
        """A session for ``sdk`` with the prelude fed: the ready one if it fits."""
        ready, self._ready = self._ready, None
        self._busy += 1
        try:
            if ready is not None and ready.sdk is sdk and ready.limits == limits:
                try:
                    await ready.prepared.wait()
                    if ready.session is not None:
                        yield ready.session
                        return
                finally:
                    ready.done.set()  # also when the run is stopped before it gets the session
                ready = None
            if ready is not None and self._busy + 1 > self._capacity:
                ready.discard()  # its worker is needed now
                await ready.finished.wait()
                ready = None
            elif ready is not None:
                self._ready = ready  # closing it now would slow this run down; it is replaced after
            async with self._checkout(sdk, limits) as session:
                await session.feed_run(_prelude(sdk))
                yield session
        finally:
            self._busy -= 1
            if ready is not None and self._ready is ready:
                self._ready = None
                ready.discard()
            self._prepare(sdk, limits)

    @asynccontextmanager
    async def fresh(self, sdk: GeneratedSdk, limits: monty.ResourceLimits) -> AsyncGenerator[monty.AsyncMontySession]:
        """A session for ``sdk`` with nothing fed yet: what a paused run's snapshot is loaded into."""
        self._busy += 1
        try:
            async with self._checkout(sdk, limits) as session:
                yield session
        finally:
            self._busy -= 1

    async def settled(self) -> None:
        """Wait until the session being prepared in the background, if any, is ready (or has failed)."""
        if self._ready is not None:
            await self._ready.prepared.wait()

    def _prepare(self, sdk: GeneratedSdk, limits: monty.ResourceLimits) -> None:
        if self._keep_ready and self._ready is None:
            self._ready = _Ready(sdk, limits)
            self._tasks.start_soon(self._keep, self._ready)

    async def _keep(self, ready: _Ready) -> None:
        try:
            async with self._checkout(ready.sdk, ready.limits) as session:
                await session.feed_run(_prelude(ready.sdk))
                if not ready.done.is_set():
                    await session.feed_run(_WARM_UP)
                ready.session = session
                ready.prepared.set()
                await ready.done.wait()
        except monty.MontyError:
            pass  # a worker that fails here would fail the run too: the run then checks out its own
        finally:
            ready.prepared.set()
            ready.finished.set()
            if self._ready is ready:
                self._ready = None

    @asynccontextmanager
    async def _checkout(
        self, sdk: GeneratedSdk, limits: monty.ResourceLimits
    ) -> AsyncGenerator[monty.AsyncMontySession]:
        stubs = module_stubs(sdk)
        modules = {
            ns: monty.ExternalModule({f.name: _driven(f) for f in sdk.functions if f.namespace == ns}, stubs=stubs[ns])
            for ns in stubs
        }
        session = self._pool.checkout(
            script_name=SCRIPT_NAME,
            limits=limits,
            type_check=True,
            type_check_format="concise",
            external_modules=modules,
        )
        async with session:
            yield session


def _prelude(sdk: GeneratedSdk) -> str:
    namespaces = dict.fromkeys(f.namespace for f in sdk.functions)
    return "".join(f"import {ns}\n" for ns in namespaces) + f"ToolError = {SDK_TOOL_ERROR}\n"
