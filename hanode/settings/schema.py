"""Declaring settings: each key once, with its type, default, bounds, doc and where it goes.

A section is a frozen dataclass whose fields are declared with :func:`setting` or
:func:`required` under the :func:`settings` decorator::

    @dataclass(frozen=True, slots=True)
    @settings
    class RetryConfig:
        max_attempts: int = setting("tries per request, the first included", ge=1, to=RetryPolicy)

The annotation is the type, the call gives bounds and the one-line doc, and ``to`` names the
policy (or runtime) dataclass fields the value is handed to. From that one declaration come the
parser and its messages (:func:`read_section`), the policy objects (:func:`build`) and the
example config (``hanode.settings.example``).

Defaults are declared once: a setting handed to a dataclass field that has a default takes that
default (the code that uses a value owns its default, and its unit tests construct it bare); a
literal ``default=`` is only for settings whose targets have none. Repeating a default, targets
whose defaults disagree, or a target field whose type differs from the setting's are
:class:`SchemaError` when the module that declares the section is imported, so they cannot ship.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hanode.addresses import HostPort
from hanode.settings.reader import Table

__all__ = [
    "Bind",
    "SchemaError",
    "Setting",
    "bind",
    "build",
    "read_section",
    "required",
    "setting",
    "settings",
    "specs",
]

_T = TypeVar("_T")
_META = "hanode.setting"
Check = Callable[[Any], tuple[Any, str]]  # value -> (value to keep, problem or "")


class SchemaError(TypeError):
    """The schema itself is inconsistent (a programming error, raised at import)."""


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class Bind:
    """One destination of a setting: ``target.field = value / scale``.

    ``scale`` converts units: SLOs are milliseconds in the file and seconds in the router, so
    the setting is the target's value times 1000.
    """

    target: type[Any]
    field: str = ""  # "" until resolved: the setting's own key
    scale: float = 1.0

    def to_target(self, value: Any) -> Any:
        return value if self.scale == 1.0 else value / self.scale


def bind(target: type[Any], field: str = "", *, scale: float = 1.0) -> Bind:
    """A destination whose field name (or unit) differs from the setting's."""
    return Bind(target, field, scale)


@dataclass(frozen=True, slots=True)
class Setting:
    """Everything the schema knows about one key; ``default`` is UNSET for required keys."""

    key: str
    hint: Any  # the resolved annotation
    doc: str
    default: Any = UNSET
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    pattern: re.Pattern[str] | None = None
    choices: tuple[str, ...] = ()
    check: Check | None = None
    binds: tuple[Bind, ...] = ()
    example: Any = UNSET  # shown in the example config instead of the default

    @property
    def required(self) -> bool:
        return self.default is UNSET


@dataclass(frozen=True, slots=True)
class _Pending:
    """What :func:`setting` returns until :func:`settings` knows the key and its type."""

    doc: str
    required: bool
    default: Any
    options: Mapping[str, Any]
    binds: tuple[Bind, ...]


def setting(
    doc: str,
    *,
    default: Any = UNSET,
    to: type[Any] | Bind | Sequence[type[Any] | Bind] = (),
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    pattern: re.Pattern[str] | None = None,
    choices: Sequence[str] = (),
    check: Check | None = None,
    example: Any = UNSET,
) -> Any:
    """A key with a default: ``default=`` or, when omitted, the default of its ``to`` target."""
    targets = to if isinstance(to, Sequence) else (to,)
    binds = tuple(t if isinstance(t, Bind) else Bind(t) for t in targets)
    options = dict(gt=gt, ge=ge, le=le, pattern=pattern, choices=tuple(choices), check=check)
    return _Pending(doc, False, default, {**options, "example": example}, binds)


def required(
    doc: str,
    *,
    example: Any,
    to: type[Any] | Bind | Sequence[type[Any] | Bind] = (),
    pattern: re.Pattern[str] | None = None,
    check: Check | None = None,
) -> Any:
    """A key the operator must give; ``example`` is what the example config shows."""
    pending: _Pending = setting(doc, to=to, pattern=pattern, check=check, example=example)
    return dataclasses.replace(pending, required=True)


def _field(cls: type[Any], name: str) -> dataclasses.Field[Any]:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise SchemaError(f"{cls.__name__} has no field {name!r}")


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return UNSET


def _resolve(owner: str, key: str, hint: Any, p: _Pending) -> Setting:
    binds = tuple(Bind(b.target, b.field or key, b.scale) for b in p.binds)
    found: list[tuple[str, Any]] = []
    for b in binds:
        where = f"{b.target.__name__}.{b.field}"
        target_hint = typing.get_type_hints(b.target)[_field(b.target, b.field).name]
        if target_hint != hint or (b.scale != 1.0 and hint is not float):
            raise SchemaError(f"{owner}.{key}: {hint} does not fit {where} ({target_hint})")
        value = _field_default(_field(b.target, b.field))
        if value is not UNSET:
            found.append((where, value if b.scale == 1.0 else value * b.scale))
    number = _optional(hint) or hint
    if (number is not float and (p.options["gt"] is not None or p.options["le"] is not None)) or (
        number not in (int, float, int | str) and p.options["ge"] is not None
    ):
        raise SchemaError(f"{owner}.{key}: bounds do not apply to {hint}")
    default = p.default
    if p.required:
        if found:
            raise SchemaError(f"{owner}.{key}: required, but {found[0][0]} has a default")
    elif default is not UNSET:
        if found:
            raise SchemaError(
                f"{owner}.{key}: the default is declared by {found[0][0]}; do not repeat it"
            )
    elif not found:
        raise SchemaError(f"{owner}.{key}: no default (give default= or use required())")
    else:
        default = found[0][1]
        if any(value != default for _, value in found):
            raise SchemaError(f"{owner}.{key}: targets disagree on the default: {found}")
    return Setting(key=key, hint=hint, doc=p.doc, default=default, binds=binds, **p.options)


def settings(cls: type[_T]) -> type[_T]:
    """Turn each ``setting()`` / ``required()`` placeholder into a dataclass field.

    Apply it under ``@dataclass``: it runs first and hands the dataclass real fields.
    """
    hints = typing.get_type_hints(cls)
    for key, value in list(vars(cls).items()):
        if isinstance(value, _Pending):
            spec = _resolve(cls.__name__, key, hints[key], value)
            meta = {_META: spec}
            if spec.required:
                setattr(cls, key, dataclasses.field(metadata=meta))
            else:
                setattr(cls, key, dataclasses.field(default=spec.default, metadata=meta))
    missing = [k for k in hints if not isinstance(vars(cls).get(k), dataclasses.Field)]
    if missing:
        raise SchemaError(f"{cls.__name__}: declare {missing} with setting() or required()")
    return cls


def specs(cls: type[Any]) -> tuple[Setting, ...]:
    """The declared settings of a section class, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_META)
        if not isinstance(spec, Setting):
            raise SchemaError(f"{cls.__name__}.{f.name} is not declared with setting()")
        out.append(spec)
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Parsing: one generic reader per type
# --------------------------------------------------------------------------------------------


def _optional(hint: Any) -> Any:
    """``X`` for ``X | None``, else None."""
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _read(t: Table, s: Setting) -> Any:
    key, hint = s.key, s.hint
    default = None if s.required else s.default
    inner = _optional(hint)
    if inner is not None:
        if inner is Path:
            return t.get_path(key, required=False)
        if t.absent(key):
            return None
        hint, default = inner, None
    if hint is str:
        if s.choices:
            return t.get_choice(key, s.choices, default)
        return t.get_str(key, default, pattern=s.pattern)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [m.value for m in hint]
        text = t.get_choice(key, values, None if default is None else default.value)
        if text in values:
            return hint(text)
        return next(iter(hint)) if default is None else default
    if hint is bool:
        return t.get_bool(key, default)
    if hint is int:
        return t.get_int(key, default, ge=s.ge)
    if hint == int | str and s.choices:  # a count, or the word for "computed" ("auto")
        return t.get_int_or_word(key, default, s.choices[0], ge=s.ge)
    if hint is float:
        return t.get_float(key, default, gt=s.gt, ge=s.ge, le=s.le)
    if hint is Path:
        return t.get_path(key, required=True) or Path()
    if hint is HostPort:
        if not s.required and t.absent(key):
            return s.default
        return t.get_listen(key)
    if hint == tuple[HostPort, ...]:
        return t.get_addresses(key)
    if hint == tuple[str, ...]:
        return tuple(t.get_str_list(key))
    raise SchemaError(f"{t.where}.{key}: no reader for {hint}")


def read_section(t: Table, cls: type[_T]) -> _T:
    """Read every declared key of ``cls`` from ``t``, collecting mistakes in ``t``."""
    values: dict[str, Any] = {}
    for s in specs(cls):
        value = _read(t, s)
        if s.check is not None and t.has(s.key) and s.key not in t.bad and value:
            value, problem = s.check(value)
            if problem:
                t.error(s.key, problem)
        values[s.key] = value
    return cls(**values)


# --------------------------------------------------------------------------------------------
# Building policy objects
# --------------------------------------------------------------------------------------------


def build(target: type[_T], *sources: object, **extra: Any) -> _T:
    """``target`` from every setting of ``sources`` bound to it, plus ``extra`` fields.

    Fields of ``target`` that no setting feeds keep their own defaults (internal constants).
    """
    kwargs: dict[str, Any] = {}
    for source in sources:
        for s in specs(type(source)):
            for b in s.binds:
                if b.target is target:
                    kwargs[b.field] = b.to_target(getattr(source, s.key))
    both = kwargs.keys() & extra.keys()
    if both:
        raise SchemaError(f"{target.__name__}: {sorted(both)} given by settings and by extra")
    return target(**kwargs, **extra)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

SectionCheck = Callable[[Table, Any], Any]  # (table, parsed) -> parsed, possibly changed
# (table, entry, earlier (index, entry) pairs): rules across [[array]] entries, e.g. duplicates
EntryCheck = Callable[[Table, Any, Sequence[tuple[int, Any]]], None]


@dataclass(frozen=True, slots=True)
class Section:
    """One TOML table (or ``[[array]]`` of tables) and the dataclass its keys are read into.

    ``presence``: "required" (missing is a mistake), "defaults" (missing reads as defaults) or
    "optional" (missing reads as None, or () for an array).
    """

    name: str  # the TOML key, also the attribute of Config
    cls: type[Any]
    doc: str  # one line, shown on the section's header in the example config
    presence: str = "defaults"
    many: bool = False
    check: SectionCheck | None = None  # cross-key rules, after the keys are read
    entry_check: EntryCheck | None = None
    examples: tuple[Mapping[str, Any], ...] = ()  # example entries for the example config

    def read(self, doc: Table) -> Any:
        """This section from the document's top-level table; mistakes go to ``doc.errors``."""

        def one(t: Table) -> Any:
            value = read_section(t, self.cls)
            return self.check(t, value) if self.check is not None else value

        if not self.many:
            if self.presence == "optional" and not doc.has(self.name):
                doc.known.append(self.name)  # known, for "did you mean"
                return None
            return doc.table(self.name, one, required=self.presence == "required")
        entries: list[tuple[int, Any]] = []
        for index, t in doc.array_of_tables(self.name, required=self.presence == "required"):
            entry = one(t)
            if self.entry_check is not None:
                self.entry_check(t, entry, entries)
            entries.append((index, entry))
        return tuple(entry for _, entry in entries)
