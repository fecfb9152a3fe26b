"""[router] stream_continuation, stream_continuation_limit and hedge: parsed, defaulted, refused
when malformed, and carried into the router's settings."""

from __future__ import annotations

from hanode.config import parse_config
from hanode.daemon import router_settings
from tests.unit.settings.config_cases import SRC, minimal, one_error, with_


def test_stream_continuation_is_on_by_default_with_a_limit_of_two() -> None:
    settings = router_settings(parse_config(minimal(), SRC))
    assert settings.stream_continuation is True and settings.stream_continuation_limit == 2


def test_stream_continuation_keys_reach_the_router() -> None:
    data = with_("router", stream_continuation=False, stream_continuation_limit=5)
    settings = router_settings(parse_config(data, SRC))
    assert settings.stream_continuation is False and settings.stream_continuation_limit == 5


def test_malformed_values_name_the_key() -> None:
    line = one_error(with_("router", stream_continuation=1))
    assert "[router].stream_continuation" in line and "true or false" in line
    line = one_error(with_("router", stream_continuation_limit=-1))
    assert "stream_continuation_limit" in line


def test_hedge_is_off_by_default_and_takes_its_classes() -> None:
    assert router_settings(parse_config(minimal(), SRC)).hedge == "off"
    settings = router_settings(parse_config(with_("router", hedge="unary"), SRC))
    assert settings.hedge == "unary"
    assert "[router].hedge" in one_error(with_("router", hedge="sometimes"))
