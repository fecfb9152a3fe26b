from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Ack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Status(_message.Message):
    __slots__ = ("node", "leader", "nodes", "replicas", "freshness", "recent_events", "version", "models", "consensus")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    RECENT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_FIELD_NUMBER: _ClassVar[int]
    node: str
    leader: str
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    freshness: Freshness
    recent_events: _containers.RepeatedCompositeFieldContainer[Event]
    version: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRoute]
    consensus: Consensus
    def __init__(self, node: _Optional[str] = ..., leader: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., freshness: _Optional[_Union[Freshness, _Mapping]] = ..., recent_events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., version: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRoute, _Mapping]]] = ..., consensus: _Optional[_Union[Consensus, _Mapping]] = ...) -> None: ...

class Consensus(_message.Message):
    __slots__ = ("healthy", "problem", "halted", "term", "leader_term", "protocol", "cluster_version", "state_digest", "lost_nodes")
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    HALTED_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LOST_NODES_FIELD_NUMBER: _ClassVar[int]
    healthy: bool
    problem: str
    halted: str
    term: int
    leader_term: int
    protocol: int
    cluster_version: int
    state_digest: str
    lost_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, healthy: _Optional[bool] = ..., problem: _Optional[str] = ..., halted: _Optional[str] = ..., term: _Optional[int] = ..., leader_term: _Optional[int] = ..., protocol: _Optional[int] = ..., cluster_version: _Optional[int] = ..., state_digest: _Optional[str] = ..., lost_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "raft_address", "api_address", "router_address", "reachable", "lost", "protocol")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    API_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    name: str
    raft_address: str
    api_address: str
    router_address: str
    reachable: bool
    lost: bool
    protocol: int
    def __init__(self, name: _Optional[str] = ..., raft_address: _Optional[str] = ..., api_address: _Optional[str] = ..., router_address: _Optional[str] = ..., reachable: _Optional[bool] = ..., lost: _Optional[bool] = ..., protocol: _Optional[int] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("name", "node", "model", "url", "engine", "role", "admin", "health", "health_level", "weight", "gpu_mem", "kv_usage", "queue_depth", "latency_ms", "ttft_ms", "reason", "breaker_state", "inflight", "breaker_open_until", "breaker_failure_class", "tpot_ms", "gpu_growth", "process", "desired")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_LEVEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    GPU_MEM_FIELD_NUMBER: _ClassVar[int]
    KV_USAGE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    BREAKER_OPEN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    GPU_GROWTH_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    node: str
    model: str
    url: str
    engine: str
    role: str
    admin: str
    health: str
    health_level: int
    weight: float
    gpu_mem: float
    kv_usage: float
    queue_depth: float
    latency_ms: float
    ttft_ms: float
    reason: str
    breaker_state: str
    inflight: int
    breaker_open_until: float
    breaker_failure_class: str
    tpot_ms: float
    gpu_growth: float
    process: str
    desired: str
    def __init__(self, name: _Optional[str] = ..., node: _Optional[str] = ..., model: _Optional[str] = ..., url: _Optional[str] = ..., engine: _Optional[str] = ..., role: _Optional[str] = ..., admin: _Optional[str] = ..., health: _Optional[str] = ..., health_level: _Optional[int] = ..., weight: _Optional[float] = ..., gpu_mem: _Optional[float] = ..., kv_usage: _Optional[float] = ..., queue_depth: _Optional[float] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., reason: _Optional[str] = ..., breaker_state: _Optional[str] = ..., inflight: _Optional[int] = ..., breaker_open_until: _Optional[float] = ..., breaker_failure_class: _Optional[str] = ..., tpot_ms: _Optional[float] = ..., gpu_growth: _Optional[float] = ..., process: _Optional[str] = ..., desired: _Optional[str] = ...) -> None: ...

class Freshness(_message.Message):
    __slots__ = ("has_quorum", "last_applied_age_s", "commit_index")
    HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLIED_AGE_S_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    has_quorum: bool
    last_applied_age_s: float
    commit_index: int
    def __init__(self, has_quorum: _Optional[bool] = ..., last_applied_age_s: _Optional[float] = ..., commit_index: _Optional[int] = ...) -> None: ...

class ModelRoute(_message.Message):
    __slots__ = ("model", "replicas_serving")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_SERVING_FIELD_NUMBER: _ClassVar[int]
    model: str
    replicas_serving: int
    def __init__(self, model: _Optional[str] = ..., replicas_serving: _Optional[int] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("replica", "node", "force")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    replica: str
    node: str
    force: bool
    def __init__(self, replica: _Optional[str] = ..., node: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, replicas: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplicaRequest(_message.Message):
    __slots__ = ("replica",)
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    replica: str
    def __init__(self, replica: _Optional[str] = ...) -> None: ...

class ListBreakersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Breaker(_message.Message):
    __slots__ = ("replica", "failure_class", "state", "until", "source", "node")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    replica: str
    failure_class: str
    state: str
    until: float
    source: str
    node: str
    def __init__(self, replica: _Optional[str] = ..., failure_class: _Optional[str] = ..., state: _Optional[str] = ..., until: _Optional[float] = ..., source: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class ListBreakersResponse(_message.Message):
    __slots__ = ("breakers",)
    BREAKERS_FIELD_NUMBER: _ClassVar[int]
    breakers: _containers.RepeatedCompositeFieldContainer[Breaker]
    def __init__(self, breakers: _Optional[_Iterable[_Union[Breaker, _Mapping]]] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("after_seq", "follow", "last")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    follow: bool
    last: int
    def __init__(self, after_seq: _Optional[int] = ..., follow: _Optional[bool] = ..., last: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "ts", "kind", "subject", "message", "fields")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    ts: float
    kind: str
    subject: str
    message: str
    fields: _struct_pb2.Struct
    def __init__(self, seq: _Optional[int] = ..., ts: _Optional[float] = ..., kind: _Optional[str] = ..., subject: _Optional[str] = ..., message: _Optional[str] = ..., fields: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("address", "node", "is_self", "is_leader", "connected")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    IS_SELF_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    address: str
    node: str
    is_self: bool
    is_leader: bool
    connected: bool
    def __init__(self, address: _Optional[str] = ..., node: _Optional[str] = ..., is_self: _Optional[bool] = ..., is_leader: _Optional[bool] = ..., connected: _Optional[bool] = ...) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class MemberRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    def __init__(self, target: _Optional[str] = ...) -> None: ...

class TransferLeaderResponse(_message.Message):
    __slots__ = ("new_leader",)
    NEW_LEADER_FIELD_NUMBER: _ClassVar[int]
    new_leader: str
    def __init__(self, new_leader: _Optional[str] = ...) -> None: ...

class ReplicaActionRequest(_message.Message):
    __slots__ = ("replica", "force")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    replica: str
    force: bool
    def __init__(self, replica: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class RestartResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class ListIncidentsRequest(_message.Message):
    __slots__ = ("last",)
    LAST_FIELD_NUMBER: _ClassVar[int]
    last: int
    def __init__(self, last: _Optional[int] = ...) -> None: ...

class IncidentStep(_message.Message):
    __slots__ = ("ts", "what", "message")
    TS_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ts: float
    what: str
    message: str
    def __init__(self, ts: _Optional[float] = ..., what: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Incident(_message.Message):
    __slots__ = ("id", "model", "replica", "open", "detected", "restored", "closed", "mttr_s", "duration_s", "timeline")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    DETECTED_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    MTTR_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    replica: str
    open: bool
    detected: float
    restored: float
    closed: float
    mttr_s: float
    duration_s: float
    timeline: _containers.RepeatedCompositeFieldContainer[IncidentStep]
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., replica: _Optional[str] = ..., open: _Optional[bool] = ..., detected: _Optional[float] = ..., restored: _Optional[float] = ..., closed: _Optional[float] = ..., mttr_s: _Optional[float] = ..., duration_s: _Optional[float] = ..., timeline: _Optional[_Iterable[_Union[IncidentStep, _Mapping]]] = ...) -> None: ...

class ListIncidentsResponse(_message.Message):
    __slots__ = ("incidents",)
    INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    incidents: _containers.RepeatedCompositeFieldContainer[Incident]
    def __init__(self, incidents: _Optional[_Iterable[_Union[Incident, _Mapping]]] = ...) -> None: ...

class GetSloRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SloBurn(_message.Message):
    __slots__ = ("window", "rate")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    window: str
    rate: float
    def __init__(self, window: _Optional[str] = ..., rate: _Optional[float] = ...) -> None: ...

class Slo(_message.Message):
    __slots__ = ("model", "request_class", "target", "requests_1h", "success_rate_1h", "availability_1h", "p95_latency_s", "mttr_s", "burn", "alerts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_CLASS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_1H_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_1H_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_1H_FIELD_NUMBER: _ClassVar[int]
    P95_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    MTTR_S_FIELD_NUMBER: _ClassVar[int]
    BURN_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    request_class: str
    target: float
    requests_1h: float
    success_rate_1h: float
    availability_1h: float
    p95_latency_s: float
    mttr_s: float
    burn: _containers.RepeatedCompositeFieldContainer[SloBurn]
    alerts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., request_class: _Optional[str] = ..., target: _Optional[float] = ..., requests_1h: _Optional[float] = ..., success_rate_1h: _Optional[float] = ..., availability_1h: _Optional[float] = ..., p95_latency_s: _Optional[float] = ..., mttr_s: _Optional[float] = ..., burn: _Optional[_Iterable[_Union[SloBurn, _Mapping]]] = ..., alerts: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSloResponse(_message.Message):
    __slots__ = ("node", "slos")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SLOS_FIELD_NUMBER: _ClassVar[int]
    node: str
    slos: _containers.RepeatedCompositeFieldContainer[Slo]
    def __init__(self, node: _Optional[str] = ..., slos: _Optional[_Iterable[_Union[Slo, _Mapping]]] = ...) -> None: ...

class StartReloadRequest(_message.Message):
    __slots__ = ("model", "max_unavailable", "surge", "drain_timeout_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    SURGE_FIELD_NUMBER: _ClassVar[int]
    DRAIN_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    max_unavailable: int
    surge: bool
    drain_timeout_s: float
    def __init__(self, model: _Optional[str] = ..., max_unavailable: _Optional[int] = ..., surge: _Optional[bool] = ..., drain_timeout_s: _Optional[float] = ...) -> None: ...

class ReloadStatusRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class AbortReloadRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class RolloutReplica(_message.Message):
    __slots__ = ("name", "step", "reason", "inflight", "unavailable_s", "serving")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_S_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    name: str
    step: str
    reason: str
    inflight: int
    unavailable_s: float
    serving: bool
    def __init__(self, name: _Optional[str] = ..., step: _Optional[str] = ..., reason: _Optional[str] = ..., inflight: _Optional[int] = ..., unavailable_s: _Optional[float] = ..., serving: _Optional[bool] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("id", "model", "state", "waiting", "reason", "by", "surge_replica", "surge_state", "max_unavailable", "drain_timeout_s", "started", "finished", "duration_s", "serving", "replicas")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    SURGE_REPLICA_FIELD_NUMBER: _ClassVar[int]
    SURGE_STATE_FIELD_NUMBER: _ClassVar[int]
    MAX_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DRAIN_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    state: str
    waiting: str
    reason: str
    by: str
    surge_replica: str
    surge_state: str
    max_unavailable: int
    drain_timeout_s: float
    started: float
    finished: float
    duration_s: float
    serving: int
    replicas: _containers.RepeatedCompositeFieldContainer[RolloutReplica]
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., state: _Optional[str] = ..., waiting: _Optional[str] = ..., reason: _Optional[str] = ..., by: _Optional[str] = ..., surge_replica: _Optional[str] = ..., surge_state: _Optional[str] = ..., max_unavailable: _Optional[int] = ..., drain_timeout_s: _Optional[float] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., duration_s: _Optional[float] = ..., serving: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[RolloutReplica, _Mapping]]] = ...) -> None: ...

class ReloadStatusResponse(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[Rollout]
    def __init__(self, rollouts: _Optional[_Iterable[_Union[Rollout, _Mapping]]] = ...) -> None: ...
