"""Secret files (Raft password, API keys, control and ops tokens, TLS keys) must be private.

A key file the whole host can read is a key the whole host holds: a node refuses to start with
one, naming the file, its mode and the fix, in one line.
"""

from __future__ import annotations

import stat
from pathlib import Path

__all__ = ["secret_file_problem"]

# Any permission for group or others: read is the leak, write lets another user swap the key.
_OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO


def secret_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold a secret (unreadable, or open to group/others), else None."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if mode & _OPEN_BITS:
        return (
            f"{path} is open to group/others (mode {stat.S_IMODE(mode):04o}): a secret file must "
            f"be readable by hanode's user only (chmod 600 {path})"
        )
    return None
