"""Reading one TOML table: typed getters that record mistakes instead of raising.

Validation collects *all* mistakes before raising, so an operator fixes a broken file in one
round instead of one error per restart. Every message names the file and the exact key, and a
getter that found a mistake returns a placeholder so that parsing can go on.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hanode.addresses import NO_ADDRESS, HostPort, parse_hostport

_T = TypeVar("_T")


class ConfigError(Exception):
    """The config is unusable; ``str()`` is one line per mistake, each naming file and key."""

    def __init__(self, errors: str | Sequence[str]) -> None:
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        super().__init__("\n".join(self.errors))


def show(value: Any) -> str:
    """Render a value the way the operator wrote it in TOML, so messages are recognisable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"


def fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


class Table:
    """One TOML table being validated: remembers which keys were read and which were bad."""

    def __init__(self, data: Mapping[str, Any], where: str, source: str, errors: list[str]) -> None:
        self.data = data
        self.where = where  # e.g. "[router]" or "[[replicas]][1]"
        self.source = source
        self.errors = errors
        self.known: list[str] = []
        self.bad: set[str] = set()

    # -- bookkeeping ------------------------------------------------------------------------

    def loc(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str, *, mark_bad: bool = True) -> None:
        """Record a mistake; ``mark_bad`` stops later cross-checks from piling onto the key."""
        if mark_bad:
            self.bad.add(key)
        self.errors.append(f"{self.source}: {self.loc(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def absent(self, key: str) -> bool:
        """True (and the key counted as known) when ``key`` is not in the table."""
        if key in self.data:
            return False
        self.known.append(key)
        return True

    def _raw(self, key: str, default: object) -> Any:
        self.known.append(key)
        if key in self.data:
            return self.data[key]
        if default is None:
            self.error(key, "missing required key")
        return default

    def finish(self) -> None:
        """Report keys nobody asked for: typos must not silently fall back to defaults."""
        for key in self.data:
            if key not in self.known:
                self.errors.append(
                    f"{self.source}: {self.loc(key)}: unknown key{suggest(key, self.known)}"
                )

    # -- typed getters (a default of None means "required") --------------------------------

    def get_str(
        self, key: str, default: str | None = None, *, pattern: re.Pattern[str] | None = None
    ) -> str:
        value = self._raw(key, default)
        if key not in self.data:
            return default or ""
        if not isinstance(value, str):
            self.error(key, f"expected a string, got {kind(value)} ({show(value)})")
            return default or ""
        if not value:
            self.error(key, "must not be empty")
        elif pattern is not None and not pattern.fullmatch(value):
            self.error(key, f"{show(value)} may only contain letters, digits, '_', '.' and '-'")
        return value

    def get_int(self, key: str, default: int | None = None, *, ge: float | None = None) -> int:
        value = self._raw(key, default)
        if key not in self.data:
            return default or 0
        # bool is a subclass of int in Python, but `rise = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"expected an integer, got {kind(value)} ({show(value)})")
            return default or 0
        if ge is not None and value < ge:
            self.error(key, f"must be >= {fmt_num(ge)}, got {value}")
        return value

    def get_int_or_word(
        self, key: str, default: int | str | None, word: str, *, ge: float | None = None
    ) -> int | str:
        """An integer, or the one word that stands for a computed value (``"auto"``)."""
        value = self._raw(key, default)
        if key not in self.data:
            return default if default is not None else 0
        if value == word:
            return word
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"expected an integer or {word!r}, got {kind(value)} ({show(value)})")
            return default if default is not None else 0
        if ge is not None and value < ge:
            self.error(key, f"must be >= {fmt_num(ge)} or {word!r}, got {value}")
        return value

    def get_bool(self, key: str, default: bool | None = None) -> bool:
        value = self._raw(key, default)
        if key not in self.data:
            return bool(default)
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {kind(value)} ({show(value)})")
            return bool(default)
        return value

    def get_float(
        self,
        key: str,
        default: float | None = None,
        *,
        gt: float | None = None,
        ge: float | None = None,
        le: float | None = None,
    ) -> float:
        value = self._raw(key, default)
        if key not in self.data:
            return float(default or 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"expected a number, got {kind(value)} ({show(value)})")
            return float(default or 0.0)
        number = float(value)
        if not math.isfinite(number):
            self.error(key, f"must be a finite number, got {number}")
        elif gt is not None and number <= gt:
            self.error(key, f"must be > {fmt_num(gt)}, got {fmt_num(number)}")
        elif ge is not None and number < ge:
            self.error(key, f"must be >= {fmt_num(ge)}, got {fmt_num(number)}")
        elif le is not None and number > le:
            self.error(key, f"must be <= {fmt_num(le)}, got {fmt_num(number)}")
        return number

    def get_str_list(self, key: str) -> list[str]:
        self.known.append(key)
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.error(key, f"expected an array of strings, got {kind(value)} ({show(value)})")
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.error(key, f"item {i}: expected a string, got {kind(item)} ({show(item)})")
            else:
                out.append(item)
        return out

    def get_choice(self, key: str, choices: Sequence[str], default: str | None) -> str:
        value = self.get_str(key, default)
        if key in self.data and key not in self.bad and value not in choices:
            self.error(key, f"{show(value)} is not one of {', '.join(choices)}")
            return default or ""
        return value

    def get_listen(self, key: str) -> HostPort:
        value = self.get_str(key)
        if key in self.bad or not value:
            return NO_ADDRESS
        hp, problem = parse_hostport(value)
        if problem:
            self.error(key, f"{show(value)}: {problem}")
        return hp

    def get_addresses(self, key: str) -> tuple[HostPort, ...]:
        out: list[HostPort] = []
        for i, text in enumerate(self.get_str_list(key)):
            hp, problem = parse_hostport(text)
            if problem:
                self.error(key, f"item {i}: {problem}")
            else:
                out.append(hp)
        return tuple(out)

    def get_path(self, key: str, *, required: bool) -> Path | None:
        """Relative paths are taken from the config file's directory, not the daemon's cwd."""
        if not required and self.absent(key):
            return None
        value = self.get_str(key)
        if key in self.bad or not value:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.source).parent / p

    # -- nested tables ---------------------------------------------------------------------

    def table(
        self,
        key: str,
        parse: Callable[[Table], _T],
        *,
        required: bool = False,
    ) -> _T:
        """Parse sub-table ``key`` with ``parse``; a missing optional table parses as empty."""
        self.known.append(key)
        value = self.data.get(key)
        where = f"[{key}]"
        if value is None:
            if required:
                self.errors.append(f"{self.source}: {where}: missing required section")
            # Parse an empty table into a throwaway error list: defaults, no cascade of noise.
            return parse(Table({}, where, self.source, []))
        if not isinstance(value, Mapping):
            self.errors.append(f"{self.source}: {where}: expected a table, got {kind(value)}")
            return parse(Table({}, where, self.source, []))
        sub = Table(value, where, self.source, self.errors)
        result = parse(sub)
        sub.finish()
        return result

    def array_of_tables(self, key: str, *, required: bool = True) -> Iterator[tuple[int, Table]]:
        """Yield one validated sub-table per ``[[key]]`` entry (unknown keys checked after)."""
        self.known.append(key)
        value = self.data.get(key)
        if value is None:
            if not required:
                return
            self.errors.append(f"{self.source}: [[{key}]]: at least one entry is required")
            return
        if not isinstance(value, list) or not value:
            self.errors.append(
                f"{self.source}: [[{key}]]: expected an array of tables ([[{key}]] blocks)"
            )
            return
        for i, item in enumerate(value):
            where = f"[[{key}]][{i}]"
            if not isinstance(item, Mapping):
                self.errors.append(f"{self.source}: {where}: expected a table, got {kind(item)}")
                continue
            sub = Table(item, where, self.source, self.errors)
            yield i, sub
            sub.finish()
