"""Config loading and validation: every rule, every class of mistake, all mistakes at once."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hanode.config import (
    BreakerSettings,
    Config,
    ConfigError,
    HealthConfig,
    HostPort,
    RetryConfig,
    RouterConfig,
    SloConfig,
    ThresholdsConfig,
    load_config,
    parse_config,
)
from hanode.pool.replica import ReplicaSpec, Role

REPO = Path(__file__).resolve().parents[2]
SRC = "hanode.toml"


def minimal() -> dict[str, Any]:
    return {
        "node": {"name": "n1", "data_dir": "/var/lib/hanode"},
        "router": {"listen": "0.0.0.0:8080"},
        "metrics": {"listen": "127.0.0.1:9100"},
        "replicas": [{"name": "r1", "model": "m", "url": "http://127.0.0.1:8001"}],
    }


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as exc_info:
        parse_config(data, SRC)
    lines = str(exc_info.value).splitlines()
    assert list(exc_info.value.errors) == lines
    return lines


def one_error(data: dict[str, Any]) -> str:
    lines = errors_of(data)
    assert len(lines) == 1, lines
    return lines[0]


def with_(section: str, **values: Any) -> dict[str, Any]:
    data = minimal()
    data.setdefault(section, {}).update(values)
    return data


def with_replica(**values: Any) -> dict[str, Any]:
    data = minimal()
    data["replicas"][0].update(values)
    return data


# -- good configs ---------------------------------------------------------------------------------


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = parse_config(minimal(), SRC)
    assert isinstance(cfg, Config)
    assert cfg.source == SRC
    assert cfg.node.name == "n1"
    assert cfg.node.data_dir == Path("/var/lib/hanode")
    assert cfg.router == RouterConfig(listen=HostPort("0.0.0.0", 8080))
    assert cfg.router.max_body_bytes == 4 * 1024 * 1024
    assert cfg.router.max_header_bytes == 16 * 1024
    assert cfg.router.api_keys == ()
    assert cfg.metrics.listen == HostPort("127.0.0.1", 9100)
    assert cfg.health == HealthConfig()
    assert cfg.thresholds == ThresholdsConfig()
    assert cfg.slo == SloConfig()
    assert cfg.replicas == (
        ReplicaSpec(name="r1", model="m", url="http://127.0.0.1:8001", node="n1"),
    )


def test_example_file_parses_and_documents_every_key() -> None:
    path = REPO / "examples" / "hanode.toml"
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert [r.name for r in cfg.replicas] == ["llama-8b-0", "llama-8b-1"]
    assert cfg.replicas[1].role is Role.STANDBY
    assert cfg.replicas[1].engine == "sglang"
    assert all(r.node == "gpu-node-1" for r in cfg.replicas)
    # The example shows defaults: it must agree with the dataclasses.
    assert cfg.health == HealthConfig()
    assert cfg.thresholds == ThresholdsConfig()
    assert cfg.slo == SloConfig()
    defaults = dataclasses.replace(cfg.router, listen=HostPort("0.0.0.0", 8080))
    assert defaults == RouterConfig(listen=HostPort("0.0.0.0", 8080))
    # Every field of every section appears in the example (api_key_file commented out).
    text = path.read_text()
    assert cfg.retry == RetryConfig()
    assert cfg.breaker == BreakerSettings()
    for cls in (
        RouterConfig,
        HealthConfig,
        ThresholdsConfig,
        SloConfig,
        RetryConfig,
        BreakerSettings,
    ):
        for field in dataclasses.fields(cls):
            assert f"{field.name} =" in text, (cls.__name__, field.name)


def test_full_config_with_every_key_set() -> None:
    data = minimal()
    data["router"].update(
        api_keys=["k1", "k2"],
        max_body_bytes=1,
        max_header_bytes=2,
        max_connections=3,
        request_timeout_s=4,
        connect_timeout_s=0.5,
        header_timeout_s=6,
        idle_timeout_s=7,
        max_tokens_limit=8,
        max_n=9,
    )
    data["health"] = dict(
        interval_s=0.5,
        timeout_s=0.25,
        rise=3,
        fall=1,
        l2_interval_s=30,
        l2_timeout_s=5,
        l2_prompt="Hi",
        l2_max_tokens=1,
        passive_window_s=10,
    )
    data["thresholds"] = dict(
        latency_ms=1500,
        ttft_ms=500.5,
        kv_usage=1,
        queue_depth=8,
        gpu_mem_prepare=0.5,
        gpu_mem_reduce=0.6,
        gpu_mem_remove=0.7,
        gpu_mem_recover=0.65,
    )
    data["slo"] = {"latency_ms": 5000, "ttft_ms": 700}
    data["replicas"] = [
        {"name": "a", "model": "m", "url": "http://h:1/", "engine": "tgi", "role": "standby"},
        {"name": "b.c-d_e", "model": "m", "url": "http://[::1]:65535", "gpu": 0},
    ]
    cfg = parse_config(data, SRC)
    assert cfg.router.api_keys == ("k1", "k2")
    assert cfg.router.request_timeout_s == 4.0
    assert isinstance(cfg.router.request_timeout_s, float)
    assert cfg.health.rise == 3
    assert cfg.health.l2_prompt == "Hi"
    assert cfg.thresholds.kv_usage == 1.0
    assert cfg.thresholds.gpu_mem_recover == 0.65
    assert cfg.slo.ttft_ms == 700.0
    a, b = cfg.replicas
    assert a == ReplicaSpec("a", "m", "http://h:1", "tgi", Role.STANDBY, None, "n1")
    assert b.url == "http://[::1]:65535"
    assert b.gpu == 0


def test_config_objects_are_frozen() -> None:
    cfg = parse_config(minimal(), SRC)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.node = cfg.node  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.router.max_n = 1  # type: ignore[misc]


def test_parse_does_not_mutate_input() -> None:
    data = with_replica(url="http://h:1/")
    before = copy.deepcopy(data)
    parse_config(data, SRC)
    assert data == before


# -- HostPort -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("0.0.0.0:8080", "0.0.0.0", 8080, "0.0.0.0:8080"),
        ("localhost:1", "localhost", 1, "localhost:1"),
        ("[::1]:8080", "::1", 8080, "[::1]:8080"),
        ("[::]:65535", "::", 65535, "[::]:65535"),
        ("gpu-node-1.example:80", "gpu-node-1.example", 80, "gpu-node-1.example:80"),
    ],
)
def test_listen_addresses(text: str, host: str, port: int, shown: str) -> None:
    cfg = parse_config(with_("router", listen=text), SRC)
    assert cfg.router.listen == HostPort(host, port)
    assert str(cfg.router.listen) == shown


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("8080", "expected 'HOST:PORT'"),
        (":8080", "expected 'HOST:PORT'"),
        ("host:", "port must be a number in 1..65535"),
        ("host:0", "port must be a number in 1..65535, got '0'"),
        ("host:65536", "port must be a number in 1..65535"),
        ("host:-1", "port must be a number in 1..65535"),
        ("host:\u00b2", "port must be a number in 1..65535"),
        ("host:http", "port must be a number"),
        ("::1:8080", "put IPv6 addresses in brackets"),
        ("[::1]8080", "expected '[IPv6]:PORT'"),
        ("[::1", "expected '[IPv6]:PORT'"),
        ("[nothost]:80", "is not an IPv6 address"),
        ("bad host:80", "is not a valid host"),
        ("", "must not be empty"),
    ],
)
def test_bad_listen_addresses(text: str, fragment: str) -> None:
    err = one_error(with_("router", listen=text))
    assert err.startswith(f"{SRC}: [router].listen: ")
    assert fragment in err


def test_metrics_listen_is_validated_too() -> None:
    err = one_error(with_("metrics", listen="nope"))
    assert err.startswith(f"{SRC}: [metrics].listen: 'nope': ")


def test_listen_must_be_a_string() -> None:
    err = one_error(with_("router", listen=8080))
    assert err == f"{SRC}: [router].listen: expected a string, got an integer (8080)"


# -- required keys and sections -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("node", "name"),
        ("node", "data_dir"),
        ("router", "listen"),
        ("metrics", "listen"),
    ],
)
def test_missing_required_key(section: str, key: str) -> None:
    data = minimal()
    del data[section][key]
    assert one_error(data) == f"{SRC}: [{section}].{key}: missing required key"


@pytest.mark.parametrize("key", ["name", "model", "url"])
def test_missing_required_replica_key(key: str) -> None:
    data = minimal()
    del data["replicas"][0][key]
    assert one_error(data) == f"{SRC}: [[replicas]][0].{key}: missing required key"


@pytest.mark.parametrize("section", ["node", "router", "metrics"])
def test_missing_required_section_is_one_error(section: str) -> None:
    data = minimal()
    del data[section]
    assert one_error(data) == f"{SRC}: [{section}]: missing required section"


def test_optional_sections_may_be_absent_or_empty() -> None:
    data = minimal()
    data.update(health={}, thresholds={}, slo={})
    cfg = parse_config(data, SRC)
    assert cfg.health == HealthConfig()


def test_section_must_be_a_table() -> None:
    data = minimal()
    data["health"] = 5
    assert one_error(data) == f"{SRC}: [health]: expected a table, got an integer"


def test_replicas_required_and_non_empty() -> None:
    data = minimal()
    del data["replicas"]
    assert one_error(data) == f"{SRC}: [[replicas]]: at least one entry is required"
    data["replicas"] = []
    assert "expected an array of tables" in one_error(data)


def test_replicas_as_single_table_is_rejected() -> None:
    data = minimal()
    data["replicas"] = {"name": "r1", "model": "m", "url": "http://h:1"}
    assert one_error(data) == (
        f"{SRC}: [[replicas]]: expected an array of tables ([[replicas]] blocks)"
    )


def test_replica_entry_must_be_table() -> None:
    data = minimal()
    data["replicas"].append("r2")
    assert one_error(data) == f"{SRC}: [[replicas]][1]: expected a table, got a string"


# -- unknown keys and sections ------------------------------------------------------------------


def test_unknown_key_with_suggestion() -> None:
    err = one_error(with_("health", intervl_s=1.0))
    assert err == f"{SRC}: [health].intervl_s: unknown key; did you mean 'interval_s'?"


def test_unknown_key_without_close_match() -> None:
    assert one_error(with_("router", zzz=1)) == f"{SRC}: [router].zzz: unknown key"


def test_unknown_replica_key() -> None:
    err = one_error(with_replica(enigne="vllm"))
    assert err == f"{SRC}: [[replicas]][0].enigne: unknown key; did you mean 'engine'?"


def test_unknown_section_with_suggestion() -> None:
    data = minimal()
    data["helth"] = {"rise": 2}
    assert one_error(data) == f"{SRC}: [helth]: unknown section; did you mean 'health'?"


def test_cluster_api_and_models_sections(tmp_path: Path) -> None:
    (tmp_path / "raft.secret").write_text("s3cret\n")
    data = minimal()
    data["cluster"] = {
        "raft_listen": "127.0.0.1:7001",
        "peers": ["127.0.0.1:7002", "127.0.0.1:7003"],
        "secret_file": "raft.secret",
    }
    data["api"] = {"listen": "127.0.0.1:9200", "api_keys": ["ctl-key"]}
    data["node"]["advertise_host"] = "10.0.0.11"
    data["models"] = [
        {"name": "m", "min_active": 2, "redundancy": "n_plus_1", "request_timeout_s": 30},
        {"name": "m2", "redundancy": "active_active"},
    ]
    cfg = parse_config(data, str(tmp_path / "hanode.toml"))
    assert cfg.cluster is not None
    assert str(cfg.cluster.raft_listen) == "127.0.0.1:7001"
    assert [str(p) for p in cfg.cluster.peers] == ["127.0.0.1:7002", "127.0.0.1:7003"]
    assert cfg.cluster.secret_file == tmp_path / "raft.secret"
    assert cfg.api is not None and cfg.api.api_keys == ("ctl-key",)
    assert [(m.name, m.min_active, m.redundancy, m.request_timeout_s) for m in cfg.models] == [
        ("m", 2, "n_plus_1", 30.0),
        ("m2", 1, "active_active", None),
    ]
    assert cfg.node.advertise_host == "10.0.0.11"
    assert parse_config(minimal(), SRC).cluster is None  # standalone node


def test_cluster_needs_advertise_host_for_loopback_replicas_and_wildcard_listens() -> None:
    data = minimal()
    data["cluster"] = {"raft_listen": "10.0.0.11:7001"}
    lines = errors_of(data)
    assert any(
        line.startswith(f"{SRC}: [[replicas]][0].url: 'http://127.0.0.1:8001' is on loopback")
        for line in lines
    ), lines
    assert any(line.startswith(f"{SRC}: [router].listen: '0.0.0.0:8080'") for line in lines)
    data["node"]["advertise_host"] = "10.0.0.11"
    assert parse_config(data, SRC).node.advertise_host == "10.0.0.11"
    data["node"]["advertise_host"] = "0.0.0.0"
    assert any("[node].advertise_host: '0.0.0.0' names no address" in x for x in errors_of(data))
    # Standalone: loopback replicas are what a single host wants.
    assert parse_config(minimal(), SRC).node.advertise_host is None


def test_cluster_mistakes() -> None:
    data = minimal()
    data["cluster"] = {
        "raft_listen": "127.0.0.1:7001",
        "peers": ["127.0.0.1:7001", "nope"],
        "election_min_s": 2.0,
    }
    data["models"] = [{"name": "m", "redundancy": "hot"}, {"name": "m"}]
    lines = errors_of(data)
    assert f"{SRC}: [cluster].peers: item 1: expected 'HOST:PORT', e.g. '0.0.0.0:8080'" in lines
    assert f"{SRC}: [cluster].election_min_s: must be below election_max_s" in lines
    assert f"{SRC}: [cluster].peers: must not contain this node's own raft_listen address" in lines
    assert any("[[models]][0].redundancy: 'hot' is not one of" in line for line in lines)
    assert f"{SRC}: [[models]][1].name: model 'm' is configured twice" in lines
    missing = minimal()
    missing["cluster"] = {}
    assert one_error(missing) == f"{SRC}: [cluster].raft_listen: missing required key"


def test_unknown_top_level_key() -> None:
    data = minimal()
    data["name"] = "n1"
    assert one_error(data) == f"{SRC}: name: unknown top-level key (put it in a section)"


def test_nested_table_in_section_is_unknown_key() -> None:
    data = with_("router", tls={"cert": "x"})
    assert one_error(data) == f"{SRC}: [router].tls: unknown key"


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
        ("thresholds", "latency_ms"),
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
    cfg = parse_config(with_("router", api_keys=["a", "b", "a"]), SRC)
    assert cfg.router.api_keys == ("a", "b")
    assert one_error(with_("router", api_keys="a")) == (
        f"{SRC}: [router].api_keys: expected an array of strings, got a string ('a')"
    )
    assert one_error(with_("router", api_keys=["a", 1])) == (
        f"{SRC}: [router].api_keys: item 1: expected a string, got an integer (1)"
    )
    assert "no whitespace" in one_error(with_("router", api_keys=["a b"]))
    assert "non-empty" in one_error(with_("router", api_keys=[""]))


def test_api_key_file_is_read_and_merged(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text("# production keys\nk2\n\n  k3  \nk1\n")
    cfg = parse_config(with_("router", api_keys=["k1"], api_key_file=str(keyfile)), SRC)
    assert cfg.router.api_keys == ("k1", "k2", "k3")
    assert cfg.router.api_key_file == keyfile


def test_api_key_file_relative_to_config_file(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("secret\n")
    data = with_("router", api_key_file="keys")
    data["node"]["data_dir"] = "state"
    cfg = parse_config(data, str(tmp_path / "hanode.toml"))
    assert cfg.router.api_keys == ("secret",)
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
