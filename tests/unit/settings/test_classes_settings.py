"""[[classes]], [[api_keys]] (plain and SHA-256), [[models]] fallback/degrade_* and the
admission configuration the front door gets from them; a hashed key authenticates and
names its class."""

from __future__ import annotations

import asyncio
import hashlib

from hanode.config import parse_config
from hanode.daemon import router_settings
from hanode.http.request import Request
from hanode.metrics.registry import NodeMetrics
from hanode.router.frontdoor import FrontDoor
from tests.unit.router.fakes import FakeResponder, FakeView
from tests.unit.settings.config_cases import SRC, errors_of, minimal

SECRET = "a-batch-key-of-enough-length"
DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()


def _doc() -> dict[str, object]:
    doc = minimal()
    doc["classes"] = [
        {
            "name": "batch",
            "priority": 2,
            "availability_target": 0.95,
            "queue_timeout_s": 30.0,
            "max_queue": 8,
            "degrade": True,
            "fallback": False,
        },
        {"name": "bulk", "priority": 3, "capacity_share": 0.5},
    ]
    doc["api_keys"] = [
        {"name": "jobs", "sha256": DIGEST, "request_class": "batch"},
        {"name": "chat", "key": "a-chat-key-of-enough-length", "class_header": True},
    ]
    doc["models"] = [
        {
            "name": "m",
            "fallback": ["small"],
            "max_concurrency": 4,
            "degrade_max_tokens": 256,
            "degrade_max_tokens_floor": 64,
        }
    ]
    return doc


def test_classes_keys_and_models_reach_the_admission_config() -> None:
    cfg = parse_config(_doc(), SRC)
    adm = router_settings(cfg).admission
    assert set(adm.classes) == {"interactive", "internal", "batch", "bulk"}
    assert adm.classes["batch"].max_queue == 8 and adm.classes["batch"].fallback is False
    assert adm.classes["interactive"].availability_target == 0.999  # built-in default
    assert adm.hashed_keys[DIGEST].request_class == "batch"
    assert adm.plain_keys[b"a-chat-key-of-enough-length"].class_header
    m = adm.model("m")
    assert m.fallback == ("small",) and m.max_concurrency == 4
    assert m.degrade.max_tokens == 256 and m.degrade.max_tokens_floor == 64


def test_mistakes_are_reported() -> None:
    doc = _doc()
    doc["api_keys"] = [
        {"name": "x", "sha256": "NOTHEX", "request_class": "nope"},
        {"name": "y"},
    ]
    doc["models"] = [{"name": "m", "fallback": ["m"], "degrade_prompt_release": 5.0}]
    text = "\n".join(errors_of(doc))
    assert "sha256: must be 64 lowercase hex digits" in text
    assert "no class 'nope'" in text
    assert "exactly one of key and sha256" in text
    assert "cannot be its own fallback" in text
    assert "must be below degrade_prompt_engage" in text


def test_a_hashed_key_authenticates_and_names_its_class() -> None:
    doc = _doc()
    doc["router"]["api_keys"] = ["sha256:" + hashlib.sha256(b"x" * 20).hexdigest()]  # type: ignore[index]
    cfg = parse_config(doc, SRC)

    async def main() -> None:
        view = FakeView()
        door = FrontDoor(view, router_settings(cfg), NodeMetrics())
        try:
            for token, status in ((SECRET, 404), ("x" * 20, 404), ("wrong-key-wrong-key", 401)):
                body = b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}'
                headers = {b"authorization": b"Bearer " + token.encode()}
                responder = FakeResponder()
                door.handle(
                    Request(b"POST", b"/v1/chat/completions", headers, body, True, None),
                    responder.as_responder,
                )
                assert responder.status == status, token
        finally:
            door.close()

    asyncio.run(main())
