"""Bearer keys of [router] and [api]: inline ``api_keys`` checked, plus ``api_key_file``'s."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hanode.settings.reader import Table

# A bearer key is the whole secret: a short one is guessed (a one-character key was accepted).
MIN_API_KEY_LENGTH = 16


def _too_short(key: str) -> str | None:
    """Why ``key`` is too short to be a secret (the key itself is never in the message)."""
    if len(key) >= MIN_API_KEY_LENGTH:
        return None
    return f"keys must be at least {MIN_API_KEY_LENGTH} characters long, got {len(key)}"


def _api_keys(t: Table, keys: tuple[str, ...], key_file: Path | None) -> tuple[str, ...]:
    """Inline keys checked, plus those of ``api_key_file``, without duplicates."""
    for i, k in enumerate(keys):
        if not k or k != k.strip() or any(c.isspace() for c in k):
            t.error("api_keys", f"item {i}: keys must be non-empty and contain no whitespace")
        elif (short := _too_short(k)) is not None:
            t.error("api_keys", f"item {i}: {short}")
    merged = list(keys)
    if key_file is not None and "api_key_file" not in t.bad:
        merged += _read_key_file(t, key_file)
    return tuple(dict.fromkeys(merged))


def _read_key_file(t: Table, path: Path) -> list[str]:
    """Keys live in a separate file so the (world-readable) config need not hold secrets."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        t.error("api_key_file", f"cannot read {str(path)!r}: {reason}")
        return []
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        short = _too_short(key)
        if short is not None:
            t.error("api_key_file", f"{str(path)!r} line {number}: {short}")
        keys.append(key)
    if not keys:
        # An empty key file would silently turn authentication off: refuse it.
        t.error("api_key_file", f"{str(path)!r} contains no keys")
    return keys


def with_keys(t: Table, cfg: Any) -> Any:
    """[router] and [api]: the keys in effect are the inline ones plus the key file's."""
    return dataclasses.replace(cfg, api_keys=_api_keys(t, cfg.api_keys, cfg.api_key_file))
