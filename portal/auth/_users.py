"""Local user accounts (argon2 password hashes) and the login throttle (SECURITY.md A9).

A failed login never says whether the user exists: an unknown name costs the same argon2 verification
as a wrong password, and both get the same message.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from portal.auth._errors import UserError
from portal.store import utcnow
from portal.store._auth_tables import UserRecord

__all__ = ["LoginThrottle", "User", "UserStore", "valid_user_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_HASHER = PasswordHasher()
# Verified against when the user does not exist, so both cases cost one argon2 verification.
_DUMMY_HASH = _HASHER.hash("dockyard: no such user")


def valid_user_name(name: str) -> bool:
    """User names: a letter or digit, then up to 127 letters, digits, ``.``, ``_``, ``@`` or ``-``."""
    return _NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class User:
    """A person who can log in."""

    name: str
    groups: frozenset[str]
    disabled: bool
    source: str

    def get_user_id(self) -> str:
        """The token subject (authlib's user interface)."""
        return self.name


def _user(record: UserRecord) -> User:
    return User(record.name, frozenset(record.groups), record.disabled, record.source)


class UserStore:
    """The ``auth_users`` table (synchronous: call it from a worker thread on the request path)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, name: str, password: str, *, groups: Iterable[str] = ()) -> User:
        """Create a local user.

        Raises:
            UserError: The name is not valid or is taken, or the password is empty.
        """
        if not valid_user_name(name):
            raise UserError(f"user name {name!r} must match {_NAME.pattern}")
        if not password:
            raise UserError("the password must not be empty")
        with Session(self.engine, expire_on_commit=False) as session:
            if session.get(UserRecord, name) is not None:
                raise UserError(f"user {name!r} already exists (dockyard users passwd {name} changes the password)")
            record = UserRecord(name=name, password_hash=_HASHER.hash(password), groups=sorted(set(groups)))
            session.add(record)
            session.commit()
            return _user(record)

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password.

        Raises:
            UserError: No such user, or an empty password.
        """
        if not password:
            raise UserError("the password must not be empty")
        with Session(self.engine, expire_on_commit=False) as session:
            record = self._get(session, name)
            record.password_hash = _HASHER.hash(password)
            session.add(record)
            session.commit()

    def set_disabled(self, name: str, disabled: bool) -> User:
        """Disable (or enable again) a user. Revoking their tokens is the caller's job.

        Raises:
            UserError: No such user.
        """
        with Session(self.engine, expire_on_commit=False) as session:
            record = self._get(session, name)
            record.disabled = disabled
            session.add(record)
            session.commit()
            return _user(record)

    def upsert_external(self, name: str, groups: Iterable[str]) -> User:
        """The user an upstream identity provider vouched for, with the groups it asserted this time.

        Raises:
            UserError: A local account has this name (the provider cannot take it over).
        """
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(UserRecord, name) or UserRecord(name=name, source="oidc")
            if record.source != "oidc":
                raise UserError(f"the name {name!r} belongs to a local account; ask an admin")
            record.groups = sorted(set(groups))
            record.last_login_at = utcnow()
            session.add(record)
            session.commit()
            return _user(record)

    def get(self, name: str) -> User | None:
        """The user, or None."""
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(UserRecord, name)
            return _user(record) if record is not None else None

    def list(self) -> list[tuple[User, UserRecord]]:
        """Every user, by name, with their record."""
        with Session(self.engine, expire_on_commit=False) as session:
            records = session.exec(select(UserRecord).order_by(col(UserRecord.name))).all()
            return [(_user(r), r) for r in records]

    def count(self) -> int:
        """How many users exist (a fresh install has none)."""
        with Session(self.engine, expire_on_commit=False) as session:
            return int(session.exec(select(func.count()).select_from(UserRecord)).one())

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs and the account is enabled; None otherwise, in the same time."""
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(UserRecord, name) if valid_user_name(name) else None
            stored = record.password_hash if record is not None and record.password_hash else _DUMMY_HASH
            try:
                ok = _HASHER.verify(stored, password) and record is not None and record.password_hash is not None
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                ok = False
            if not ok or record is None or record.disabled:
                return None
            if _HASHER.check_needs_rehash(stored):
                record.password_hash = _HASHER.hash(password)
            record.last_login_at = utcnow()
            session.add(record)
            session.commit()
            return _user(record)

    @staticmethod
    def _get(session: Session, name: str) -> UserRecord:
        record = session.get(UserRecord, name)
        if record is None:
            raise UserError(f"no user {name!r} (dockyard users list shows them)")
        return record


class LoginThrottle:
    """At most ``limit`` failed logins per user name, and per client address, in ``window`` seconds.

    In memory, per portal process: with N processes an attacker gets at most N times the limit.
    """

    def __init__(self, *, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until another attempt for ``name`` from ``address`` is allowed (0: allowed now)."""
        now = time.monotonic()
        with self._lock:
            waits = [
                times[0] + self.window - now
                for key in (f"user:{name.lower()}", f"addr:{address}")
                if len(times := self._recent(key, now)) >= self.limit
            ]
        return max(waits, default=0.0)

    def failed(self, name: str, address: str) -> None:
        """Count a failed attempt."""
        now = time.monotonic()
        with self._lock:
            for key in (f"user:{name.lower()}", f"addr:{address}"):
                self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # forget idle keys
                for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window]:
                    del self._failures[key]

    def succeeded(self, name: str) -> None:
        """Forget the failures of ``name``."""
        with self._lock:
            self._failures.pop(f"user:{name.lower()}", None)
