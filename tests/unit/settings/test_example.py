"""examples/hanode.toml is generated from the schema; these tests fail when the two disagree."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hanode.config import Config, parse_config
from hanode.settings import example
from hanode.settings.schema import UNSET, specs
from hanode.settings.sections import SECTIONS

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hanode.toml"


def test_example_file_is_the_generated_one() -> None:
    # If this fails: python -m hanode.settings.example --write (and review the diff).
    assert EXAMPLE.read_text(encoding="utf-8") == example.render()
    assert example.main(["--check"]) == 0


def _keys(data: dict[str, Any], name: str) -> set[str]:
    value = data[name]
    entries = value if isinstance(value, list) else [value]
    return set().union(*(e.keys() for e in entries))


def test_every_key_in_the_example_is_in_the_schema_and_every_key_is_shown() -> None:
    text = example.render(uncomment=True)
    data = tomllib.loads(text)
    assert set(data) == {s.name for s in SECTIONS}
    for section in SECTIONS:
        declared = {s.key for s in specs(section.cls)}
        shown = _keys(data, section.name)
        # Keys without a default appear commented out (``# key = example``).
        commented = {k for k in declared - shown if f"# {k} = " in text}
        assert shown | commented == declared, section.name
        assert shown <= declared, section.name


def test_example_shows_every_default(tmp_path: Path) -> None:
    """Parsed, the example gives each key its declared default unless it shows an example."""
    cfg = parse_config(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")), str(EXAMPLE))
    for section in SECTIONS:
        value = getattr(cfg, section.name)
        if section.presence == "optional" or section.many:
            continue  # commented out, or entries that are examples by nature
        for s in specs(section.cls):
            if s.example is UNSET and not s.required:
                assert getattr(value, s.key) == s.default, (section.name, s.key)


def test_optional_sections_of_the_example_parse(tmp_path: Path) -> None:
    data = tomllib.loads(example.render(uncomment=True))
    keys = tmp_path / "ctl_keys"
    keys.write_text("ctl-key-0123456789\n")
    data["api"]["api_key_file"] = str(keys)
    read_keys = tmp_path / "ctl_read_keys"
    read_keys.write_text("ctl-read-0123456789\n")
    data["api"]["read_only_key_file"] = str(read_keys)
    data["node"]["advertise_host"] = "10.0.0.11"  # needed under [cluster]: loopback replicas
    cfg = parse_config(data, str(tmp_path / "hanode.toml"))
    assert isinstance(cfg, Config)
    assert cfg.cluster is not None and [str(p) for p in cfg.cluster.peers] == [
        "10.0.0.12:7001",
        "10.0.0.13:7001",
    ]
    assert cfg.api is not None and cfg.api.api_keys == ("ctl-key-0123456789",)
    assert cfg.api.read_only_keys == ("ctl-read-0123456789",)
    assert [m.request_timeout_s for m in cfg.models] == [600.0]


def test_render_wraps_long_docs() -> None:
    for line in example.render(uncomment=True).splitlines():
        assert len(line) <= 100, line
