from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OverrideMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERRIDE_MODE_UNSPECIFIED: _ClassVar[OverrideMode]
    OVERRIDE_MODE_EXACT: _ClassVar[OverrideMode]
    OVERRIDE_MODE_MIN: _ClassVar[OverrideMode]
    OVERRIDE_MODE_MAX: _ClassVar[OverrideMode]
OVERRIDE_MODE_UNSPECIFIED: OverrideMode
OVERRIDE_MODE_EXACT: OverrideMode
OVERRIDE_MODE_MIN: OverrideMode
OVERRIDE_MODE_MAX: OverrideMode

class SLO(_message.Message):
    __slots__ = ("ttft_ms", "itl_ms", "quantile")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    ITL_MS_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    itl_ms: float
    quantile: float
    def __init__(self, ttft_ms: _Optional[float] = ..., itl_ms: _Optional[float] = ..., quantile: _Optional[float] = ...) -> None: ...

class ForecastValue(_message.Message):
    __slots__ = ("signal", "mean", "quantiles", "ready", "model", "horizon_s", "note")
    class QuantilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    signal: str
    mean: float
    quantiles: _containers.ScalarMap[str, float]
    ready: bool
    model: str
    horizon_s: float
    note: str
    def __init__(self, signal: _Optional[str] = ..., mean: _Optional[float] = ..., quantiles: _Optional[_Mapping[str, float]] = ..., ready: _Optional[bool] = ..., model: _Optional[str] = ..., horizon_s: _Optional[float] = ..., note: _Optional[str] = ...) -> None: ...

class Override(_message.Message):
    __slots__ = ("pool", "mode", "replicas", "expires_s", "reason")
    POOL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    pool: str
    mode: OverrideMode
    replicas: int
    expires_s: float
    reason: str
    def __init__(self, pool: _Optional[str] = ..., mode: _Optional[_Union[OverrideMode, str]] = ..., replicas: _Optional[int] = ..., expires_s: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class PoolStatus(_message.Message):
    __slots__ = ("name", "role", "gpus_per_replica", "min_replicas", "max_replicas", "target", "desired", "ready", "starting", "draining", "data_state", "data_reason", "staleness_s", "paused", "override", "forecasts", "slo_attainment_ratio", "observed_ttft_p99_ms", "observed_itl_p99_ms", "predicted_ttft_ms", "predicted_itl_ms", "last_outcome", "last_reason", "last_guards", "sources")
    class SourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    STARTING_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    DATA_STATE_FIELD_NUMBER: _ClassVar[int]
    DATA_REASON_FIELD_NUMBER: _ClassVar[int]
    STALENESS_S_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    FORECASTS_FIELD_NUMBER: _ClassVar[int]
    SLO_ATTAINMENT_RATIO_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_TTFT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_ITL_P99_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_ITL_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LAST_REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_GUARDS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    gpus_per_replica: int
    min_replicas: int
    max_replicas: int
    target: int
    desired: int
    ready: int
    starting: int
    draining: int
    data_state: str
    data_reason: str
    staleness_s: float
    paused: bool
    override: Override
    forecasts: _containers.RepeatedCompositeFieldContainer[ForecastValue]
    slo_attainment_ratio: float
    observed_ttft_p99_ms: float
    observed_itl_p99_ms: float
    predicted_ttft_ms: float
    predicted_itl_ms: float
    last_outcome: str
    last_reason: str
    last_guards: _containers.RepeatedScalarFieldContainer[str]
    sources: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., gpus_per_replica: _Optional[int] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., target: _Optional[int] = ..., desired: _Optional[int] = ..., ready: _Optional[int] = ..., starting: _Optional[int] = ..., draining: _Optional[int] = ..., data_state: _Optional[str] = ..., data_reason: _Optional[str] = ..., staleness_s: _Optional[float] = ..., paused: _Optional[bool] = ..., override: _Optional[_Union[Override, _Mapping]] = ..., forecasts: _Optional[_Iterable[_Union[ForecastValue, _Mapping]]] = ..., slo_attainment_ratio: _Optional[float] = ..., observed_ttft_p99_ms: _Optional[float] = ..., observed_itl_p99_ms: _Optional[float] = ..., predicted_ttft_ms: _Optional[float] = ..., predicted_itl_ms: _Optional[float] = ..., last_outcome: _Optional[str] = ..., last_reason: _Optional[str] = ..., last_guards: _Optional[_Iterable[str]] = ..., sources: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("model", "policy", "policy_params", "slo", "budget_gpus", "gpus_allocated", "paused_all", "last_tick_s", "ticks", "last_decision_id", "dry_run", "ready", "tick_s", "pools", "role", "leader", "identity", "sources")
    class SourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_PARAMS_FIELD_NUMBER: _ClassVar[int]
    SLO_FIELD_NUMBER: _ClassVar[int]
    BUDGET_GPUS_FIELD_NUMBER: _ClassVar[int]
    GPUS_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_ALL_FIELD_NUMBER: _ClassVar[int]
    LAST_TICK_S_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    LAST_DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    TICK_S_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    model: str
    policy: str
    policy_params: _struct_pb2.Struct
    slo: SLO
    budget_gpus: int
    gpus_allocated: int
    paused_all: bool
    last_tick_s: float
    ticks: int
    last_decision_id: int
    dry_run: bool
    ready: bool
    tick_s: float
    pools: _containers.RepeatedCompositeFieldContainer[PoolStatus]
    role: str
    leader: str
    identity: str
    sources: _containers.ScalarMap[str, str]
    def __init__(self, model: _Optional[str] = ..., policy: _Optional[str] = ..., policy_params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., slo: _Optional[_Union[SLO, _Mapping]] = ..., budget_gpus: _Optional[int] = ..., gpus_allocated: _Optional[int] = ..., paused_all: _Optional[bool] = ..., last_tick_s: _Optional[float] = ..., ticks: _Optional[int] = ..., last_decision_id: _Optional[int] = ..., dry_run: _Optional[bool] = ..., ready: _Optional[bool] = ..., tick_s: _Optional[float] = ..., pools: _Optional[_Iterable[_Union[PoolStatus, _Mapping]]] = ..., role: _Optional[str] = ..., leader: _Optional[str] = ..., identity: _Optional[str] = ..., sources: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PoolSpec(_message.Message):
    __slots__ = ("name", "role", "gpus_per_replica", "min_replicas", "max_replicas", "cold_start_s", "drain_timeout_s", "model")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    COLD_START_S_FIELD_NUMBER: _ClassVar[int]
    DRAIN_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    gpus_per_replica: int
    min_replicas: int
    max_replicas: int
    cold_start_s: float
    drain_timeout_s: float
    model: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., gpus_per_replica: _Optional[int] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., cold_start_s: _Optional[float] = ..., drain_timeout_s: _Optional[float] = ..., model: _Optional[str] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolSpec]
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolSpec, _Mapping]]] = ...) -> None: ...

class GetForecastRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class GetForecastResponse(_message.Message):
    __slots__ = ("pool", "time_s", "forecasts")
    POOL_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    FORECASTS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    time_s: float
    forecasts: _containers.RepeatedCompositeFieldContainer[ForecastValue]
    def __init__(self, pool: _Optional[str] = ..., time_s: _Optional[float] = ..., forecasts: _Optional[_Iterable[_Union[ForecastValue, _Mapping]]] = ...) -> None: ...

class RoleFlip(_message.Message):
    __slots__ = ("from_pool", "to_pool", "count")
    FROM_POOL_FIELD_NUMBER: _ClassVar[int]
    TO_POOL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    from_pool: str
    to_pool: str
    count: int
    def __init__(self, from_pool: _Optional[str] = ..., to_pool: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class PoolDecision(_message.Message):
    __slots__ = ("pool", "previous", "proposed", "target", "direction", "reason", "guards", "estimate", "outcome", "outcome_detail", "error_class")
    class EstimateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    POOL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_DETAIL_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    previous: int
    proposed: int
    target: int
    direction: str
    reason: str
    guards: _containers.RepeatedScalarFieldContainer[str]
    estimate: _containers.ScalarMap[str, float]
    outcome: str
    outcome_detail: str
    error_class: str
    def __init__(self, pool: _Optional[str] = ..., previous: _Optional[int] = ..., proposed: _Optional[int] = ..., target: _Optional[int] = ..., direction: _Optional[str] = ..., reason: _Optional[str] = ..., guards: _Optional[_Iterable[str]] = ..., estimate: _Optional[_Mapping[str, float]] = ..., outcome: _Optional[str] = ..., outcome_detail: _Optional[str] = ..., error_class: _Optional[str] = ...) -> None: ...

class DecisionRecord(_message.Message):
    __slots__ = ("id", "time_s", "policy", "held", "pools", "flips")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    FLIPS_FIELD_NUMBER: _ClassVar[int]
    id: int
    time_s: float
    policy: str
    held: bool
    pools: _containers.RepeatedCompositeFieldContainer[PoolDecision]
    flips: _containers.RepeatedCompositeFieldContainer[RoleFlip]
    def __init__(self, id: _Optional[int] = ..., time_s: _Optional[float] = ..., policy: _Optional[str] = ..., held: _Optional[bool] = ..., pools: _Optional[_Iterable[_Union[PoolDecision, _Mapping]]] = ..., flips: _Optional[_Iterable[_Union[RoleFlip, _Mapping]]] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("pool", "since_s", "until_s", "page_size", "page_token")
    POOL_FIELD_NUMBER: _ClassVar[int]
    SINCE_S_FIELD_NUMBER: _ClassVar[int]
    UNTIL_S_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pool: str
    since_s: float
    until_s: float
    page_size: int
    page_token: str
    def __init__(self, pool: _Optional[str] = ..., since_s: _Optional[float] = ..., until_s: _Optional[float] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[DecisionRecord]
    next_page_token: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[DecisionRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchDecisionsRequest(_message.Message):
    __slots__ = ("pool", "after_id")
    POOL_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    pool: str
    after_id: int
    def __init__(self, pool: _Optional[str] = ..., after_id: _Optional[int] = ...) -> None: ...

class ExplainDecisionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ExplainDecisionResponse(_message.Message):
    __slots__ = ("decision", "inputs", "summary")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    decision: DecisionRecord
    inputs: _struct_pb2.Struct
    summary: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, decision: _Optional[_Union[DecisionRecord, _Mapping]] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., summary: _Optional[_Iterable[str]] = ...) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ("pool", "reason")
    POOL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    pool: str
    reason: str
    def __init__(self, pool: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PauseResponse(_message.Message):
    __slots__ = ("paused",)
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    paused: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, paused: _Optional[_Iterable[str]] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class ResumeResponse(_message.Message):
    __slots__ = ("paused",)
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    paused: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, paused: _Optional[_Iterable[str]] = ...) -> None: ...

class SetOverrideRequest(_message.Message):
    __slots__ = ("pool", "mode", "replicas", "ttl_s", "reason")
    POOL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    pool: str
    mode: OverrideMode
    replicas: int
    ttl_s: float
    reason: str
    def __init__(self, pool: _Optional[str] = ..., mode: _Optional[_Union[OverrideMode, str]] = ..., replicas: _Optional[int] = ..., ttl_s: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class SetOverrideResponse(_message.Message):
    __slots__ = ("override",)
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    override: Override
    def __init__(self, override: _Optional[_Union[Override, _Mapping]] = ...) -> None: ...

class ClearOverrideRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class ClearOverrideResponse(_message.Message):
    __slots__ = ("cleared",)
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    cleared: bool
    def __init__(self, cleared: _Optional[bool] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("name", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SetPolicyResponse(_message.Message):
    __slots__ = ("name", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateSLORequest(_message.Message):
    __slots__ = ("ttft_ms", "itl_ms", "quantile")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    ITL_MS_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    itl_ms: float
    quantile: float
    def __init__(self, ttft_ms: _Optional[float] = ..., itl_ms: _Optional[float] = ..., quantile: _Optional[float] = ...) -> None: ...

class UpdateSLOResponse(_message.Message):
    __slots__ = ("slo",)
    SLO_FIELD_NUMBER: _ClassVar[int]
    slo: SLO
    def __init__(self, slo: _Optional[_Union[SLO, _Mapping]] = ...) -> None: ...

class UpdateBudgetRequest(_message.Message):
    __slots__ = ("max_gpus", "unlimited")
    MAX_GPUS_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    max_gpus: int
    unlimited: bool
    def __init__(self, max_gpus: _Optional[int] = ..., unlimited: _Optional[bool] = ...) -> None: ...

class UpdateBudgetResponse(_message.Message):
    __slots__ = ("max_gpus",)
    MAX_GPUS_FIELD_NUMBER: _ClassVar[int]
    max_gpus: int
    def __init__(self, max_gpus: _Optional[int] = ...) -> None: ...

class DryRunRequest(_message.Message):
    __slots__ = ("policy", "policy_params", "ttft_ms", "itl_ms", "quantile", "budget_gpus", "unlimited_budget", "overrides", "clear_overrides", "ignore_pause")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_PARAMS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    ITL_MS_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_GPUS_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_BUDGET_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    CLEAR_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    IGNORE_PAUSE_FIELD_NUMBER: _ClassVar[int]
    policy: str
    policy_params: _struct_pb2.Struct
    ttft_ms: float
    itl_ms: float
    quantile: float
    budget_gpus: int
    unlimited_budget: bool
    overrides: _containers.RepeatedCompositeFieldContainer[Override]
    clear_overrides: _containers.RepeatedScalarFieldContainer[str]
    ignore_pause: bool
    def __init__(self, policy: _Optional[str] = ..., policy_params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., ttft_ms: _Optional[float] = ..., itl_ms: _Optional[float] = ..., quantile: _Optional[float] = ..., budget_gpus: _Optional[int] = ..., unlimited_budget: _Optional[bool] = ..., overrides: _Optional[_Iterable[_Union[Override, _Mapping]]] = ..., clear_overrides: _Optional[_Iterable[str]] = ..., ignore_pause: _Optional[bool] = ...) -> None: ...

class DryRunResponse(_message.Message):
    __slots__ = ("decision", "summary")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    decision: DecisionRecord
    summary: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, decision: _Optional[_Union[DecisionRecord, _Mapping]] = ..., summary: _Optional[_Iterable[str]] = ...) -> None: ...

class Plugin(_message.Message):
    __slots__ = ("group", "name", "target", "distribution")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    group: str
    name: str
    target: str
    distribution: str
    def __init__(self, group: _Optional[str] = ..., name: _Optional[str] = ..., target: _Optional[str] = ..., distribution: _Optional[str] = ...) -> None: ...

class ListPluginsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPluginsResponse(_message.Message):
    __slots__ = ("plugins",)
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    plugins: _containers.RepeatedCompositeFieldContainer[Plugin]
    def __init__(self, plugins: _Optional[_Iterable[_Union[Plugin, _Mapping]]] = ...) -> None: ...
