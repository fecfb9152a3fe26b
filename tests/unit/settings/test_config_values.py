"""Config validation: names, URLs, numbers and ranges, API keys, all mistakes at once, files."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hanode.config import (
    BreakerSettings,
    ConfigError,
    HostPort,
    load_config,
    parse_config,
)
from hanode.pool.replica import Role
from tests.unit.settings.config_cases import (
    SRC,
    errors_of,
    minimal,
    one_error,
    with_,
    with_replica,
)

# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad name", "a/b", "ü", "a:b"])
def test_node_name_charset(name: str) -> None:
    err = one_error(with_("node", name=name))
    assert err.startswith(f"{SRC}: [node].name: {name!r} may only contain letters")


@pytest.mark.parametrize("name", ["bad name", "r@1"])
def test_replica_name_charset(name: str) -> None:
    err = one_error(with_replica(name=name))
    assert err.startswith(f"{SRC}: [[replicas]][0].name: {name!r} may only contain")


def test_empty_strings_rejected() -> None:
    lines = errors_of(with_replica(name="", model=""))
    assert lines == [
        f"{SRC}: [[replicas]][0].name: must not be empty",
        f"{SRC}: [[replicas]][0].model: must not be empty",
    ]


def test_duplicate_replica_names() -> None:
    data = minimal()
    data["replicas"].append({"name": "r2", "model": "m", "url": "http://h:2"})
    data["replicas"].append({"name": "r1", "model": "m", "url": "http://h:3"})
    assert (
        one_error(data) == f"{SRC}: [[replicas]][2].name: 'r1' is already used by [[replicas]][0]"
    )


def test_replica_node_is_node_name() -> None:
    cfg = parse_config(with_("node", name="gpu-7"), SRC)
    assert cfg.replicas[0].node == "gpu-7"


# -- replica url / engine / role / gpu ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
        ("http://127.0.0.1:8001/", "http://127.0.0.1:8001"),
        ("http://gpu-1.local:80", "http://gpu-1.local:80"),
        ("HTTP://h:1", "http://h:1"),
        ("http://[::1]:8001/", "http://[::1]:8001"),
    ],
)
def test_good_urls(url: str, normalised: str) -> None:
    assert parse_config(with_replica(url=url), SRC).replicas[0].url == normalised


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://h:443", "https is not supported yet"),
        ("ftp://h:21", "expected 'http://HOST:PORT'"),
        ("h:8001", "expected 'http://HOST:PORT'"),
        ("http://h", "missing port"),
        ("http://:8001", "missing host"),
        ("http://h:99999", "is not a valid URL"),
        ("http://h:1/v1", "must not have a path (drop the /v1"),
        ("http://h:1/api", "must not have a path"),
        ("http://h:1/?x=1", "must not have a query"),
        ("http://u:p@h:1", "credentials"),
        ("http://h:0", "port must be in 1..65535"),
        ("http://a b:1", "is not a valid host"),
        ("http://[zz]:1", "is not a valid"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    err = one_error(with_replica(url=url))
    assert err.startswith(f"{SRC}: [[replicas]][0].url: {url!r}")
    assert fragment in err


def test_engine_choices_and_default() -> None:
    for engine in ("vllm", "sglang", "tgi", "llamacpp", "openai"):
        assert parse_config(with_replica(engine=engine), SRC).replicas[0].engine == engine
    data = minimal()
    data["replicas"].append({"name": "r2", "model": "m", "url": "http://h:2", "engine": "foo"})
    assert one_error(data) == (
        f"{SRC}: [[replicas]][1].engine: 'foo' is not one of vllm, sglang, tgi, llamacpp, openai"
    )


def test_role_choices_and_default() -> None:
    assert parse_config(minimal(), SRC).replicas[0].role is Role.ACTIVE
    assert parse_config(with_replica(role="standby"), SRC).replicas[0].role is Role.STANDBY
    err = one_error(with_replica(role="primary"))
    assert err == f"{SRC}: [[replicas]][0].role: 'primary' is not one of active, standby"


def test_gpu_index() -> None:
    assert parse_config(minimal(), SRC).replicas[0].gpu is None
    assert parse_config(with_replica(gpu=3), SRC).replicas[0].gpu == 3
    assert one_error(with_replica(gpu=-1)) == f"{SRC}: [[replicas]][0].gpu: must be >= 0, got -1"
    assert "expected an integer" in one_error(with_replica(gpu="0"))


# -- number types and ranges ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("router", "max_body_bytes"),
        ("router", "max_header_bytes"),
        ("router", "max_connections"),
        ("router", "max_tokens_limit"),
        ("router", "max_n"),
        ("health", "rise"),
        ("health", "fall"),
        ("health", "l2_max_tokens"),
    ],
)
def test_integer_keys(section: str, key: str) -> None:
    where = f"{SRC}: [{section}].{key}"
    assert one_error(with_(section, **{key: True})) == (
        f"{where}: expected an integer, got a boolean (true)"
    )
    assert one_error(with_(section, **{key: 2.0})) == (
        f"{where}: expected an integer, got a float (2.0)"
    )
    assert one_error(with_(section, **{key: "2"})) == (
        f"{where}: expected an integer, got a string ('2')"
    )
    assert one_error(with_(section, **{key: 0})) == f"{where}: must be >= 1, got 0"
    cfg = parse_config(with_(section, **{key: 1}), SRC)
    assert getattr(getattr(cfg, section), key) == 1


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("router", "request_timeout_s"),
        ("router", "connect_timeout_s"),
        ("router", "header_timeout_s"),
        ("router", "idle_timeout_s"),
        ("health", "interval_s"),
        ("health", "timeout_s"),
        ("health", "l2_interval_s"),
        ("health", "l2_timeout_s"),
        ("health", "passive_window_s"),
        ("thresholds", "ttft_ms"),
        ("thresholds", "queue_depth"),
        ("slo", "latency_ms"),
        ("slo", "ttft_ms"),
    ],
)
def test_positive_number_keys(section: str, key: str) -> None:
    where = f"{SRC}: [{section}].{key}"
    assert one_error(with_(section, **{key: False})) == (
        f"{where}: expected a number, got a boolean (false)"
    )
    assert one_error(with_(section, **{key: "1"})) == (
        f"{where}: expected a number, got a string ('1')"
    )
    assert one_error(with_(section, **{key: 0})) == f"{where}: must be > 0, got 0"
    assert one_error(with_(section, **{key: -1.5})) == f"{where}: must be > 0, got -1.5"
    assert one_error(with_(section, **{key: float("inf")})) == (
        f"{where}: must be a finite number, got inf"
    )
    assert "finite" in one_error(with_(section, **{key: float("nan")}))
    value = getattr(getattr(parse_config(with_(section, **{key: 7}), SRC), section), key)
    assert value == 7.0
    assert isinstance(value, float)


@pytest.mark.parametrize(
    "key", ["kv_usage", "gpu_mem_prepare", "gpu_mem_reduce", "gpu_mem_remove", "gpu_mem_recover"]
)
def test_fraction_keys(key: str) -> None:
    where = f"{SRC}: [thresholds].{key}"
    assert one_error(with_("thresholds", **{key: 0})) == f"{where}: must be > 0, got 0"
    assert one_error(with_("thresholds", **{key: 1.5})) == f"{where}: must be <= 1, got 1.5"
    assert "expected a number" in one_error(with_("thresholds", **{key: "0.5"}))


def test_gpu_mem_marks_must_be_ordered() -> None:
    assert one_error(with_("thresholds", gpu_mem_prepare=0.9)) == (
        f"{SRC}: [thresholds].gpu_mem_prepare: gpu_mem_prepare (0.9) must be below "
        "gpu_mem_reduce (0.9, the default)"
    )
    lines = errors_of(with_("thresholds", gpu_mem_remove=0.9))
    assert lines == [
        f"{SRC}: [thresholds].gpu_mem_remove: gpu_mem_reduce (0.9, the default) must be below "
        "gpu_mem_remove (0.9)",
        f"{SRC}: [thresholds].gpu_mem_remove: gpu_mem_recover (0.9, the default) must be below "
        "gpu_mem_remove (0.9)",
    ]
    err = one_error(with_("thresholds", gpu_mem_recover=0.95))
    assert err == (
        f"{SRC}: [thresholds].gpu_mem_recover: gpu_mem_recover (0.95) must be below "
        "gpu_mem_remove (0.95, the default)"
    )
    # gpu_mem_remove may be 1 and recover may sit below prepare (a wide hysteresis band).
    ok = with_("thresholds", gpu_mem_remove=1, gpu_mem_recover=0.5)
    assert parse_config(ok, SRC).thresholds.gpu_mem_remove == 1.0


def test_ordering_not_checked_when_a_value_is_already_wrong() -> None:
    # A single error for the bad value, not a cascade of ordering complaints.
    assert one_error(with_("thresholds", gpu_mem_remove="high")).startswith(
        f"{SRC}: [thresholds].gpu_mem_remove: expected a number"
    )


def test_l2_prompt_must_be_non_empty_string() -> None:
    assert (
        one_error(with_("health", l2_prompt="")) == f"{SRC}: [health].l2_prompt: must not be empty"
    )
    assert "expected a string" in one_error(with_("health", l2_prompt=1))


# -- api keys -------------------------------------------------------------------------------------


def test_api_keys_list() -> None:
    a, b = "a" * 16, "b" * 16  # keys are at least 16 characters
    cfg = parse_config(with_("router", api_keys=[a, b, a]), SRC)
    assert cfg.router.api_keys == (a, b)
    assert one_error(with_("router", api_keys="a")) == (
        f"{SRC}: [router].api_keys: expected an array of strings, got a string ('a')"
    )
    assert one_error(with_("router", api_keys=[a, 1])) == (
        f"{SRC}: [router].api_keys: item 1: expected a string, got an integer (1)"
    )
    assert "no whitespace" in one_error(with_("router", api_keys=["a b"]))
    assert "non-empty" in one_error(with_("router", api_keys=[""]))


def test_api_key_file_is_read_and_merged(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    k1, k2, k3 = (f"key-{i}-0123456789" for i in (1, 2, 3))
    keyfile.write_text(f"# production keys\n{k2}\n\n  {k3}  \n{k1}\n")
    cfg = parse_config(with_("router", api_keys=[k1], api_key_file=str(keyfile)), SRC)
    assert cfg.router.api_keys == (k1, k2, k3)
    assert cfg.router.api_key_file == keyfile


def test_api_key_file_relative_to_config_file(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("secret-0123456789\n")
    data = with_("router", api_key_file="keys")
    data["node"]["data_dir"] = "state"
    cfg = parse_config(data, str(tmp_path / "hanode.toml"))
    assert cfg.router.api_keys == ("secret-0123456789",)
    assert cfg.node.data_dir == tmp_path / "state"


def test_api_key_file_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    err = one_error(with_("router", api_key_file=str(missing)))
    assert (
        err
        == f"{SRC}: [router].api_key_file: cannot read {str(missing)!r}: No such file or directory"
    )
    err = one_error(with_("router", api_key_file=str(tmp_path)))
    assert err.startswith(f"{SRC}: [router].api_key_file: cannot read {str(tmp_path)!r}: ")


def test_api_key_file_without_keys_is_refused(tmp_path: Path) -> None:
    # An empty file would silently disable authentication.
    keyfile = tmp_path / "keys"
    keyfile.write_text("# nothing yet\n\n")
    err = one_error(with_("router", api_key_file=str(keyfile)))
    assert err == f"{SRC}: [router].api_key_file: {str(keyfile)!r} contains no keys"


# -- collecting all mistakes ----------------------------------------------------------------------


def test_all_mistakes_are_reported_together() -> None:
    data = minimal()
    data["node"]["name"] = "bad name"
    data["router"]["listen"] = "nope"
    data["router"]["max_n"] = 0
    data["health"] = {"rise": True, "timeot_s": 1}
    data["thresholds"] = {"kv_usage": 2}
    data["replicas"].append({"name": "r1", "model": "m", "url": "https://h:1", "engine": "foo"})
    data["clustr"] = {}
    lines = errors_of(data)
    assert lines == [
        f"{SRC}: [node].name: 'bad name' may only contain letters, digits, '_', '.' and '-'",
        f"{SRC}: [router].listen: 'nope': expected 'HOST:PORT', e.g. '0.0.0.0:8080'",
        f"{SRC}: [router].max_n: must be >= 1, got 0",
        f"{SRC}: [health].rise: expected an integer, got a boolean (true)",
        f"{SRC}: [health].timeot_s: unknown key; did you mean 'timeout_s'?",
        f"{SRC}: [thresholds].kv_usage: must be <= 1, got 2",
        f"{SRC}: [[replicas]][1].url: 'https://h:1': https is not supported yet; "
        "use http:// to a local replica",
        f"{SRC}: [[replicas]][1].engine: 'foo' is not one of vllm, sglang, tgi, llamacpp, openai",
        f"{SRC}: [[replicas]][1].name: 'r1' is already used by [[replicas]][0]",
        f"{SRC}: [clustr]: unknown section; did you mean 'cluster'?",
    ]


def test_config_error_accepts_single_message() -> None:
    err = ConfigError("x: broken")
    assert str(err) == "x: broken"
    assert err.errors == ("x: broken",)


# -- files ----------------------------------------------------------------------------------------


def write_minimal(path: Path, extra: str = "") -> Path:
    path.write_text(
        "[node]\n"
        'name = "n1"\n'
        'data_dir = "/var/lib/hanode"\n'
        "[router]\n"
        'listen = "[::1]:8080"\n'
        "[metrics]\n"
        'listen = "127.0.0.1:9100"\n'
        "[[replicas]]\n"
        'name = "r1"\n'
        'model = "m"\n'
        'url = "http://127.0.0.1:8001/"\n' + extra
    )
    return path


def test_load_config_from_file(tmp_path: Path) -> None:
    path = write_minimal(tmp_path / "hanode.toml")
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg.router.listen == HostPort("::1", 8080)
    assert load_config(str(path)) == cfg


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    path = write_minimal(tmp_path / "hanode.toml", 'engine = "foo"\n')
    with pytest.raises(ConfigError) as exc_info:
        load_config(path)
    assert str(exc_info.value) == (
        f"{path}: [[replicas]][0].engine: 'foo' is not one of vllm, sglang, tgi, llamacpp, openai"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as exc_info:
        load_config(path)
    assert str(exc_info.value) == f"{path}: cannot read config: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc_info:
        load_config(tmp_path)
    assert str(exc_info.value).startswith(f"{tmp_path}: cannot read config: ")


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "hanode.toml"
    path.write_text('[node]\nname = "n1"\ndata_dir = /var/lib\n')
    with pytest.raises(ConfigError) as exc_info:
        load_config(path)
    msg = str(exc_info.value)
    assert msg.startswith(f"{path}: line 3, column 12: invalid TOML: ")
    assert "\n" not in msg
    assert isinstance(exc_info.value.__cause__, tomllib.TOMLDecodeError)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "hanode.toml"
    path.write_bytes(b'[node]\nname = "\xff"\n')
    with pytest.raises(ConfigError) as exc_info:
        load_config(path)
    assert str(exc_info.value).startswith(f"{path}: invalid TOML: not UTF-8")


def test_retry_and_breaker_sections_parse_and_validate() -> None:
    data = {
        "node": {"name": "n1", "data_dir": "/tmp/x"},
        "router": {"listen": "127.0.0.1:8080"},
        "metrics": {"listen": "127.0.0.1:9100"},
        "retry": {"max_attempts": 4, "per_try_timeout_s": 1.5, "budget_ratio": 0.1},
        "breaker": {"consecutive_failures": 2, "open_base_s": 0.5},
        "replicas": [{"name": "r1", "model": "m", "url": "http://127.0.0.1:8001"}],
    }
    cfg = parse_config(data, "t.toml")
    assert cfg.retry.max_attempts == 4
    assert cfg.retry.per_try_timeout_s == 1.5
    assert cfg.retry.budget_ratio == 0.1
    assert cfg.breaker.consecutive_failures == 2
    assert cfg.breaker.open_base_s == 0.5
    assert cfg.breaker.oom_trip_count == 3  # default kept

    bad = dict(data, retry={"max_attempts": 0, "budget_ratio": 2.0, "per_try": 1})
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "t.toml")
    text = str(info.value)
    assert "t.toml: [retry].max_attempts:" in text
    assert "t.toml: [retry].budget_ratio:" in text
    assert "t.toml: [retry].per_try: unknown key" in text


def test_optional_sections_validate_like_the_others() -> None:
    # [cluster], [api] and [[models]] are read by the same schema reader as every other section.
    data = minimal()
    data["cluster"] = {"raft_listen": "10.0.0.11:7001", "raft_listn": "x", "heartbeat_s": 0}
    data["api"] = {"listen": "10.0.0.11:9200", "api_key": ["k"]}
    data["models"] = [{"name": "m", "min_active": 0, "redundncy": "n_plus_1"}]
    data["node"]["advertise_host"] = "10.0.0.11"
    lines = errors_of(data)
    assert lines == [
        f"{SRC}: [cluster].heartbeat_s: must be > 0, got 0",
        f"{SRC}: [cluster].raft_listn: unknown key; did you mean 'raft_listen'?",
        f"{SRC}: [api].api_key: unknown key; did you mean 'api_keys'?",
        f"{SRC}: [[models]][0].min_active: must be >= 1, got 0",
        f"{SRC}: [[models]][0].redundncy: unknown key; did you mean 'redundancy'?",
    ]


def test_breaker_max_ejection_percent_bounds() -> None:
    assert parse_config(with_("breaker", max_ejection_percent=0), SRC).breaker == BreakerSettings(
        max_ejection_percent=0.0
    )
    assert one_error(with_("breaker", max_ejection_percent=101)) == (
        f"{SRC}: [breaker].max_ejection_percent: must be <= 100, got 101"
    )


def test_advertise_host_forms() -> None:
    assert parse_config(with_("node", advertise_host="[::1]"), SRC).node.advertise_host == "::1"
    assert one_error(with_("node", advertise_host="a b")) == (
        f"{SRC}: [node].advertise_host: 'a b' is not a valid host"
    )
    assert one_error(with_("node", advertise_host="")) == (
        f"{SRC}: [node].advertise_host: must not be empty"
    )
