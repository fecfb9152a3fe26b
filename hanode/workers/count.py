"""How many data-plane workers a node runs (``[router] workers``)."""

from __future__ import annotations

AUTO_CAP = 16  # "auto" on a large host: past this the relay is no longer what limits a node


def resolve_workers(setting: int | str, usable_cores: int) -> int:
    """``"auto"``: one per usable core, at most :data:`AUTO_CAP`; a number as given."""
    if setting == "auto":
        return max(1, min(usable_cores, AUTO_CAP))
    return max(1, int(setting))
