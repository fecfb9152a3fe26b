"""Which class a request belongs to: key, header where the key allows it, default (pure)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.classes import (
    DEFAULT_CLASSES,
    KeyGrant,
    RequestClass,
    key_digest,
    merge_classes,
    resolve_class,
)

CLASSES = merge_classes(())


def test_defaults_are_the_issue_s() -> None:
    by_name = {c.name: c for c in DEFAULT_CLASSES}
    assert (by_name["interactive"].priority, by_name["interactive"].availability_target) == (
        0,
        0.999,
    )
    assert (by_name["internal"].priority, by_name["internal"].availability_target) == (1, 0.99)
    assert (by_name["batch"].priority, by_name["batch"].availability_target) == (2, 0.95)
    assert by_name["interactive"].queue_timeout_s < by_name["batch"].queue_timeout_s


def test_a_configured_class_replaces_the_default_of_its_name() -> None:
    merged = merge_classes((RequestClass("batch", 5, 0.9), RequestClass("bulk", 9)))
    assert merged["batch"].priority == 5 and "bulk" in merged and "interactive" in merged


def test_key_header_and_default() -> None:
    jobs = KeyGrant("jobs", "batch")
    chat = KeyGrant("chat", "interactive", class_header=True)
    assert resolve_class(jobs, None, CLASSES) == "batch"
    assert resolve_class(jobs, "interactive", CLASSES) == "batch"  # may not pick by header
    assert resolve_class(chat, "internal", CLASSES) == "internal"
    assert resolve_class(chat, "nope", CLASSES) is None  # a 400 at the front door
    assert resolve_class(None, "batch", CLASSES) == "interactive"  # a [router] key: default
    assert resolve_class(None, "batch", CLASSES, header_allowed=True) == "batch"  # open API
    assert resolve_class(None, None, CLASSES, "internal") == "internal"


@given(st.sampled_from(sorted(CLASSES)), st.text(max_size=20))
def test_a_key_without_header_rights_always_gets_its_class(cls: str, header: str) -> None:
    grant = KeyGrant("k", cls, class_header=False)
    assert resolve_class(grant, header, CLASSES) == cls


def test_digest_is_sha256_hex() -> None:
    assert key_digest(b"secret") == hashlib.sha256(b"secret").hexdigest()
