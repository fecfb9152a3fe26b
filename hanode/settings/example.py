"""The documented example config, generated from the schema so that it cannot disagree with it.

``python -m hanode.settings.example`` prints it, ``--write`` replaces examples/hanode.toml and
``--check`` fails when that file is stale (tests/unit/settings/test_example.py does the same).
Every key is shown with its default and its one-line doc; required keys with an example value;
keys without a default, and the optional sections, commented out.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hanode.addresses import HostPort
from hanode.settings.schema import UNSET, Section, Setting, specs
from hanode.settings.sections import SECTIONS

EXAMPLE_PATH = Path(__file__).resolve().parents[2] / "examples" / "hanode.toml"
_COLUMN = 36  # where the comments start
_WIDTH = 100

HEADER = """\
# hanode configuration: one file per GPU host, usually /etc/hanode/hanode.toml.
#
# Generated from hanode/settings/sections.py (python -m hanode.settings.example --write): change
# the schema, not this file. Every key is shown with its default; keys marked "required" have
# no default, and keys and sections that are optional are commented out. Unknown keys are
# rejected (with a "did you mean" hint), so a typo never silently falls back to a default.
# Check a file with: hanode check-config FILE. Relative paths are resolved against the
# directory of this file.
"""


def toml_value(value: Any) -> str:
    """``value`` written as TOML (the types settings have)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, HostPort | Path):
        value = str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _doc(s: Setting) -> str:
    doc = s.doc
    if s.required:
        doc = f"required; {doc}"
    elif s.default is None:
        doc = f"optional; {doc}"
    choices = s.choices
    if isinstance(s.hint, type) and issubclass(s.hint, enum.Enum):
        choices = tuple(m.value for m in s.hint)
    if choices:
        doc = f"{doc} ({' | '.join(choices)})"
    return doc


def _line(left: str, doc: str, lead: str = "") -> list[str]:
    """``left`` padded to the comment column, then ``doc`` wrapped onto continuation lines;
    ``lead`` ("#" in a commented-out section) starts the continuation lines."""
    pad = max(_COLUMN, len(left) + 2)
    parts = textwrap.wrap(doc, _WIDTH - pad - 2, break_on_hyphens=False) if doc else []
    if not parts:
        return [left]
    return [f"{left.ljust(pad)}# {parts[0]}"] + [f"{lead.ljust(pad)}# {p}" for p in parts[1:]]


def _shown(s: Setting, entry: Mapping[str, Any], use_example: bool) -> tuple[Any, bool]:
    """The value to show and whether the key is commented out (it has no default)."""
    if s.key in entry:
        if entry[s.key] is None and s.example is not UNSET:  # shown, but commented out
            return s.example, True
        return entry[s.key], False
    if s.example is not UNSET and (use_example or s.required or s.default is None):
        return s.example, not s.required and s.default is None and not use_example
    return s.default, False


def render_section(section: Section, *, commented: bool) -> list[str]:
    """One section: its header with the doc, each key with its value and doc; later entries
    of an ``[[array]]`` show only their values."""
    lead, prefix = ("#", "# ") if commented else ("", "")
    header = f"[[{section.name}]]" if section.many else f"[{section.name}]"
    use_example = section.many or section.presence == "optional"
    entries = section.examples or ({},)
    lines: list[str] = []
    for index, entry in enumerate(entries):
        if index:
            lines.append(lead)
        lines += _line(prefix + header, "" if index else section.doc, lead)
        for s in specs(section.cls):
            value, off = _shown(s, {**entries[0], **entry}, use_example)
            left = f"{prefix}{'# ' if off else ''}{s.key} = {toml_value(value)}"
            lines += _line(left, "" if index else _doc(s), lead)
    return lines


def render(*, uncomment: bool = False) -> str:
    """The example file; ``uncomment`` also turns on the optional sections (for tests)."""
    blocks = [HEADER.rstrip("\n").split("\n")]
    for section in SECTIONS:
        off = section.presence == "optional" and not uncomment
        blocks.append(render_section(section, commented=off))
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hanode.settings.example")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"replace {EXAMPLE_PATH}")
    group.add_argument("--check", action="store_true", help="exit 1 when that file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        EXAMPLE_PATH.write_text(text, encoding="utf-8")
    elif args.check:
        if EXAMPLE_PATH.read_text(encoding="utf-8") != text:
            print(f"{EXAMPLE_PATH} is stale: python -m hanode.settings.example --write")
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
