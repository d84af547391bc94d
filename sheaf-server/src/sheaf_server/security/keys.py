"""API keys and their scopes, from `SHEAF_API_KEYS` or `server.auth.keys_file`.

An entry is `KEY:SCOPE|SCOPE…` — a scope is a model or pipeline name, `*` (every model and
pipeline) or `admin` (/metrics, hot swap, the listing of every model). A keys file holds
the same entries one per line, or YAML with hashes instead of keys:

    - id: ci-bot
      sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
      scopes: [forecaster, ensemble]

Keys are held only as SHA-256 digests; a presented key is hashed and compared with every
entry by `hmac.compare_digest` (constant time, no early exit), and a key is never logged or
shown: entries are named by their `id` (for a raw key, `key-` and the first 8 hex digits of
its digest).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from sheaf_core.errors import ConfigError

ALL, ADMIN = "*", "admin"


@dataclass(frozen=True)
class Principal:
    """The holder of a valid key: its id (safe to log) and what it may call."""

    id: str
    scopes: frozenset[str]

    def may_call(self, name: str) -> bool:
        return ALL in self.scopes or name in self.scopes

    @property
    def admin(self) -> bool:
        return ADMIN in self.scopes


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


class KeyRing:
    """The keys a server accepts."""

    def __init__(self, entries: Iterable[tuple[bytes, Principal]]) -> None:
        self._entries = [_Entry(digest, principal) for digest, principal in entries]

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def principals(self) -> list[Principal]:
        return [entry.principal for entry in self._entries]

    def identify(self, key: str) -> Principal | None:
        """The principal of `key`, or None. Every entry is compared, in constant time."""
        digest = hashlib.sha256(key.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        return found

    def check_scopes(self, served: Collection[str]) -> None:
        """ConfigError naming every scope that is no served model, pipeline, `*` or
        `admin` (a typo would otherwise lock a client out without a word)."""
        known = {*served, ALL, ADMIN}
        unknown = sorted({f"{p.id}: {scope!r}" for p in self.principals for scope in p.scopes
                          if scope not in known})
        if unknown:
            raise ConfigError(f"API key scopes name what this server does not serve: "
                              f"{', '.join(unknown)}; scopes are model or pipeline names "
                              f"({', '.join(sorted(served))}), {ALL!r} or {ADMIN!r}")


def load_keys(env_var: str, keys_file: str | None) -> KeyRing | None:
    """The keys from the environment variable and the file; None when there are none (the
    server is then open, as before keys were configured)."""
    entries: list[tuple[bytes, Principal]] = []
    raw = os.environ.get(env_var, "").strip()
    if raw:
        entries += [_raw_entry(item, f"${env_var}") for item in raw.split(",") if item.strip()]
    if keys_file:
        entries += _file_entries(Path(keys_file))
    ids = [principal.id for _, principal in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"API keys: the ids {', '.join(duplicates)} are used twice "
                          "(a key listed twice, or two entries with one id)")
    return KeyRing(entries) if entries else None


def _raw_entry(item: str, where: str) -> tuple[bytes, Principal]:
    key, _, scopes = item.strip().partition(":")
    if not key or not scopes.strip():
        shown = f"{key[:2]}…" if key else "(empty)"
        raise ConfigError(f"{where}: an entry ({shown}) is not KEY:SCOPE|SCOPE…; name what "
                          "the key may call (a model or pipeline name, '*', or 'admin')")
    digest = hashlib.sha256(key.encode()).digest()
    return digest, Principal(f"key-{digest.hex()[:8]}", _scopes(scopes.split("|")))


def _file_entries(path: Path) -> list[tuple[bytes, Principal]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"server.auth.keys_file: cannot read {str(path)!r}: "
                          f"{exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return [_hashed_entry(item, f"{path} entry {number}")
                for number, item in enumerate(data, 1)]
    lines = [line.strip() for line in text.splitlines()]
    return [_raw_entry(line, f"{path} line {number}") for number, line in enumerate(lines, 1)
            if line and not line.startswith("#")]


def _hashed_entry(item: dict[str, object], where: str) -> tuple[bytes, Principal]:
    unknown = set(item) - {"id", "sha256", "scopes"}
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}; an entry has id, "
                          "sha256 and scopes")
    key_id, digest, scopes = item.get("id"), item.get("sha256"), item.get("scopes")
    if not isinstance(key_id, str) or not key_id:
        raise ConfigError(f"{where}: id: name the key (it is what logs show)")
    try:
        raw = bytes.fromhex(str(digest))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{where} ({key_id}): sha256: 64 hex digits, the key's SHA-256 "
                          "(e.g. `printf %s KEY | sha256sum`)")
    if not isinstance(scopes, list) or not scopes:
        raise ConfigError(f"{where} ({key_id}): scopes: a list of model or pipeline names, "
                          "'*' or 'admin'")
    return raw, Principal(key_id, _scopes(scopes))


def _scopes(values: Iterable[object]) -> frozenset[str]:
    return frozenset(str(value).strip() for value in values if str(value).strip())
