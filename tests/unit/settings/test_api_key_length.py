"""Issue 16, finding 12: a one-character API key was accepted. Keys for the front door
(``[router]``) and the control API (``[api]``) must be at least 16 characters, inline or in the
key file, and the error names the file, the key and where the short key is (never the key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hanode.config import parse_config
from hanode.settings.sections import MIN_API_KEY_LENGTH
from tests.unit.settings.config_cases import SRC, errors_of, minimal, one_error, with_

GOOD = "g" * MIN_API_KEY_LENGTH


def _with_api(tmp_path: Path, **api: Any) -> dict[str, Any]:
    (tmp_path / "raft.secret").write_text("s3cret-s3cret-s3cret\n")
    data = minimal()
    data["cluster"] = {
        "raft_listen": "127.0.0.1:7001",
        "peers": ["127.0.0.1:7002", "127.0.0.1:7003"],
        "secret_file": str(tmp_path / "raft.secret"),
    }
    data["node"]["advertise_host"] = "10.0.0.11"
    data["api"] = {"listen": "127.0.0.1:9200", **api}
    return data


def test_minimum_is_16() -> None:
    assert MIN_API_KEY_LENGTH == 16


@pytest.mark.parametrize("short", ["Q", "x" * (MIN_API_KEY_LENGTH - 1)])
def test_short_inline_router_key_is_refused(short: str) -> None:
    err = one_error(with_("router", api_keys=[GOOD, short]))
    assert err == (
        f"{SRC}: [router].api_keys: item 1: keys must be at least {MIN_API_KEY_LENGTH} "
        f"characters long, got {len(short)}"
    )
    assert short not in err  # the key itself is never echoed


def test_a_key_of_exactly_the_minimum_is_accepted() -> None:
    cfg = parse_config(with_("router", api_keys=[GOOD]), SRC)
    assert cfg.router.api_keys == (GOOD,)


def test_short_key_in_the_router_key_file_names_file_and_line(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"# keys\n{GOOD}\n\nab\n")
    err = one_error(with_("router", api_key_file=str(keyfile)))
    assert err == (
        f"{SRC}: [router].api_key_file: {str(keyfile)!r} line 4: keys must be at least "
        f"{MIN_API_KEY_LENGTH} characters long, got 2"
    )


def test_short_api_keys_are_refused(tmp_path: Path) -> None:
    keyfile = tmp_path / "ctl_keys"
    keyfile.write_text("tok-1\n")
    errors = errors_of(_with_api(tmp_path, api_keys=["c"], api_key_file=str(keyfile)))
    assert errors == [
        f"{SRC}: [api].api_keys: item 0: keys must be at least {MIN_API_KEY_LENGTH} "
        "characters long, got 1",
        f"{SRC}: [api].api_key_file: {str(keyfile)!r} line 1: keys must be at least "
        f"{MIN_API_KEY_LENGTH} characters long, got 5",
    ]


def test_long_api_keys_load(tmp_path: Path) -> None:
    keyfile = tmp_path / "ctl_keys"
    keyfile.write_text(f"{GOOD}-file\n")
    cfg = parse_config(_with_api(tmp_path, api_keys=[GOOD], api_key_file=str(keyfile)), SRC)
    assert cfg.api is not None and cfg.api.api_keys == (GOOD, f"{GOOD}-file")
