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
    return _keys_of(t, keys, key_file, "api_keys")


def _keys_of(t: Table, keys: tuple[str, ...], key_file: Path | None, key: str) -> tuple[str, ...]:
    """Inline keys of ``key`` checked, plus those of its file (``<key minus s>_file``)."""
    file_key = key.removesuffix("s") + "_file"
    for i, k in enumerate(keys):
        if not k or k != k.strip() or any(c.isspace() for c in k):
            t.error(key, f"item {i}: keys must be non-empty and contain no whitespace")
        elif (short := _too_short(k)) is not None:
            t.error(key, f"item {i}: {short}")
    merged = list(keys)
    if key_file is not None and file_key not in t.bad:
        merged += _read_key_file(t, key_file, file_key)
    return tuple(dict.fromkeys(merged))


def _read_key_file(t: Table, path: Path, file_key: str = "api_key_file") -> list[str]:
    """Keys live in a separate file so the (world-readable) config need not hold secrets."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        t.error(file_key, f"cannot read {str(path)!r}: {reason}")
        return []
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        short = _too_short(key)
        if short is not None:
            t.error(file_key, f"{str(path)!r} line {number}: {short}")
        keys.append(key)
    if not keys:
        # An empty key file would silently turn authentication off: refuse it.
        t.error(file_key, f"{str(path)!r} contains no keys")
    return keys


def with_keys(t: Table, cfg: Any) -> Any:
    """[router] and [api]: the keys in effect are the inline ones plus the key file's."""
    return dataclasses.replace(cfg, api_keys=_api_keys(t, cfg.api_keys, cfg.api_key_file))


def _tls_pair(t: Table, cfg: Any) -> None:
    if (cfg.tls_cert_file is None) != (cfg.tls_key_file is None):
        t.error("tls_cert_file", "give tls_cert_file and tls_key_file together", mark_bad=False)


def router_keys(t: Table, cfg: Any) -> Any:
    """[router]: the API keys in effect, and TLS files given in pairs."""
    _tls_pair(t, cfg)
    return with_keys(t, cfg)


def api_keys(t: Table, cfg: Any) -> Any:
    """[api]: admin and read-only tokens in effect (each with its file), TLS in pairs, and a
    client CA only with TLS."""
    _tls_pair(t, cfg)
    if cfg.tls_client_ca_file is not None and cfg.tls_cert_file is None:
        t.error(
            "tls_client_ca_file",
            "client certificates need TLS: set tls_cert_file and tls_key_file too",
            mark_bad=False,
        )
    cfg = with_keys(t, cfg)
    read_only = _keys_of(t, cfg.read_only_keys, cfg.read_only_key_file, "read_only_keys")
    return dataclasses.replace(cfg, read_only_keys=read_only)
