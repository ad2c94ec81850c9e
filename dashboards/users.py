"""Dashboard users, API tokens and the audit log, in a small SQLite file (``<data_dir>/web.db``).

Passwords are Argon2id hashes (argon2-cffi's defaults, re-hashed on login when those change).
API tokens are stored as SHA-256 digests: they are long random strings, so a fast hash is
enough and a stolen file does not reveal them. No default credentials exist: the first
start of the dashboard creates ``admin`` with a random one-time password that is logged once
(:func:`ensure_admin`); that password must be changed at first login.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_LOGGER = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    must_change INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    label TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    who TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""

USER_NAME = r"^[A-Za-z0-9._-]{1,32}$"
MIN_PASSWORD = 10


class Role(enum.IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    VIEWER = 0  # read every page and API
    OPERATOR = 1  # acknowledge, clear, silence, start flash jobs
    ADMIN = 2  # users and settings


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    must_change: bool


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at_ms: int
    who: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True, slots=True)
class Silence:
    node_id: str
    start_ms: int
    end_ms: int
    who: str
    reason: str


class UserError(ValueError):
    """A user operation that cannot be done; the message says why."""


def web_db_path(data_dir: Path) -> Path:
    return data_dir / "web.db"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    """Thread-safe (one lock): the dashboard calls it from worker threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        path.chmod(0o600)
        self._lock = threading.Lock()
        self._hasher = PasswordHasher()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- users ------------------------------------------------------------------------------

    def add(self, name: str, role: Role, password: str, *, must_change: bool = False) -> User:
        if not re.match(USER_NAME, name):
            raise UserError(f"user name {name!r}: use 1-32 letters, digits, '.', '_' or '-'")
        _check_password(password)
        digest = self._hasher.hash(password)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                    (name, role.name.lower(), digest, int(must_change), _now_ms()),
                )
            except sqlite3.IntegrityError:
                raise UserError(f"user {name!r} exists; use `fieldgate users passwd`") from None
        return User(name, role, must_change)

    def set_password(self, name: str, password: str, *, must_change: bool = False) -> None:
        _check_password(password)
        digest = self._hasher.hash(password)
        with self._lock:
            cur = self._db.execute(
                "UPDATE users SET hash=?, must_change=? WHERE name=?",
                (digest, int(must_change), name),
            )
        if cur.rowcount == 0:
            raise UserError(f"no user {name!r}; see `fieldgate users list`")

    def get(self, name: str) -> User | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, must_change FROM users WHERE name=?", (name,)
            ).fetchone()
        return User(row[0], Role[row[1].upper()], bool(row[2])) if row else None

    def all(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("SELECT name, role, must_change FROM users ORDER BY name")
            return [User(r[0], Role[r[1].upper()], bool(r[2])) for r in rows]

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM users").fetchone()
        return int(n)

    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is right, else None (same work for unknown names)."""
        with self._lock:
            row = self._db.execute(
                "SELECT hash, role, must_change FROM users WHERE name=?", (name,)
            ).fetchone()
        # An unknown name still costs one Argon2 verification, so timing does not tell
        # which names exist.
        stored = row[0] if row else _dummy_hash()
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self._hasher.check_needs_rehash(stored):
            with self._lock:
                self._db.execute(
                    "UPDATE users SET hash=? WHERE name=?", (self._hasher.hash(password), name)
                )
        return User(name, Role[row[1].upper()], bool(row[2]))

    # -- API tokens -------------------------------------------------------------------------

    def new_token(self, name: str, label: str) -> str:
        if self.get(name) is None:
            raise UserError(f"no user {name!r}; see `fieldgate users list`")
        token = "fgt_" + secrets.token_urlsafe(32)
        with self._lock:
            self._db.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?)", (_digest(token), name, label, _now_ms())
            )
        return token

    def token_user(self, token: str) -> User | None:
        with self._lock:
            row = self._db.execute(
                "SELECT u.name, u.role FROM tokens t JOIN users u ON u.name = t.name"
                " WHERE t.digest=?",
                (_digest(token),),
            ).fetchone()
        # A token is for machines: a pending password change does not stop it.
        return User(row[0], Role[row[1].upper()], False) if row else None

    # -- audit and silences -----------------------------------------------------------------

    def audit(self, who: str, action: str, target: str, detail: str = "") -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO audit (at_ms, who, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (_now_ms(), who, action, target, detail[:500]),
            )

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at_ms, who, action, target, detail FROM audit ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [AuditEntry(*r) for r in rows]

    def add_silence(self, silence: Silence) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO silences (node_id, start_ms, end_ms, who, reason)"
                " VALUES (?, ?, ?, ?, ?)",
                (silence.node_id, silence.start_ms, silence.end_ms, silence.who, silence.reason),
            )

    def silences(self, *, active_at_ms: int | None = None) -> list[Silence]:
        """Maintenance windows, newest first; only those in force (or to come) at a time."""
        where, args = ("", ()) if active_at_ms is None else (" WHERE end_ms > ?", (active_at_ms,))
        with self._lock:
            rows = self._db.execute(
                f"SELECT node_id, start_ms, end_ms, who, reason FROM silences{where}"
                " ORDER BY id DESC LIMIT 200",
                args,
            ).fetchall()
        return [Silence(*r) for r in rows]


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: at least {MIN_PASSWORD} characters")


@functools.cache
def _dummy_hash() -> str:
    return PasswordHasher().hash(secrets.token_urlsafe(16))


def ensure_admin(store: UserStore) -> str | None:
    """Create ``admin`` with a random one-time password when there are no users at all.

    Returns that password (the caller logs it once) or None when users exist.
    """
    if store.count():
        return None
    password = secrets.token_urlsafe(12)
    store.add("admin", Role.ADMIN, password, must_change=True)
    store.audit("system", "user.create", "admin", "first start: one-time setup password")
    return password


def first_admin_password(data_dir: Path) -> str | None:
    """Create the first admin now (for the demo, which prints it) instead of at server start."""
    store = UserStore(web_db_path(data_dir))
    try:
        return ensure_admin(store)
    finally:
        store.close()
