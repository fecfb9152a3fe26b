"""Config loading: good configs, required and unknown keys and sections, the cluster sections."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest

from hanode.config import (
    BreakerSettings,
    Config,
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
from tests.unit.settings.config_cases import (
    REPO,
    SRC,
    errors_of,
    minimal,
    one_error,
    with_,
    with_replica,
)

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
        api_keys=["key-1-0123456789", "key-2-0123456789"],
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
        ttft_ms=500.5,
        latency_tolerance=0.25,
        ttft_floor_ms=5,
        tpot_floor_ms=0.5,
        gpu_growth=0.1,
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
        {
            "name": "b.c-d_e",
            "model": "m",
            "url": "http://[::1]:65535",
            "gpu": 0,
            "l2_path": "/v1/chat/completions",
        },
    ]
    cfg = parse_config(data, SRC)
    assert cfg.router.api_keys == ("key-1-0123456789", "key-2-0123456789")
    assert cfg.router.request_timeout_s == 4.0
    assert isinstance(cfg.router.request_timeout_s, float)
    assert cfg.health.rise == 3
    assert cfg.health.l2_prompt == "Hi"
    assert cfg.thresholds.kv_usage == 1.0
    assert cfg.thresholds.gpu_mem_recover == 0.65
    assert (cfg.thresholds.latency_tolerance, cfg.thresholds.gpu_growth) == (0.25, 0.1)
    assert (cfg.thresholds.ttft_floor_ms, cfg.thresholds.tpot_floor_ms) == (5.0, 0.5)
    assert cfg.slo.ttft_ms == 700.0
    a, b = cfg.replicas
    assert a == ReplicaSpec("a", "m", "http://h:1", "tgi", Role.STANDBY, None, "n1")
    assert b.url == "http://[::1]:65535"
    assert b.gpu == 0
    assert (a.l2_path, b.l2_path) == (None, "/v1/chat/completions")


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


@pytest.mark.parametrize("section", ["node", "router"])
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
    data["api"] = {"listen": "127.0.0.1:9200", "api_keys": ["ctl-key-0123456789"]}
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
    assert cfg.api is not None and cfg.api.api_keys == ("ctl-key-0123456789",)
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


def test_the_ops_endpoint_is_loopback_by_default() -> None:
    """Issue 14: without [metrics] the ops endpoint listens on loopback only."""
    data = minimal()
    del data["metrics"]
    cfg = parse_config(data, SRC)
    assert cfg.metrics.listen == HostPort("127.0.0.1", 9100)
    assert cfg.metrics.token_file is None
