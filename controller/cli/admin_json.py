"""Admin responses as the CLI's JSON: snake_case keys, numbers as numbers, enums as short lower-case names.

    to_plain(status)  # {"budget_gpus": 32, "pools": [{"override": {"mode": "exact", ...}}], ...}

Protobuf's own JSON mapping gives camelCase keys, 64-bit integers as strings and full enum names
(``"maxGpus": "32"``, ``OVERRIDE_MODE_EXACT``); the rest of the CLI speaks snake_case with plain numbers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["enum_short_name", "to_plain"]


def enum_short_name(enum: Any, number: int) -> str:
    """``OVERRIDE_MODE_EXACT`` of enum ``OverrideMode`` as ``exact``: the prefix all its values share, dropped."""
    words = [v.name.split("_") for v in enum.values]
    shared = 0
    while len(words) > 1 and all(len(w) > shared + 1 and w[shared] == words[0][shared] for w in words):
        shared += 1
    prefix = "".join(f"{w}_" for w in words[0][:shared])
    value = enum.values_by_number.get(number)
    name = value.name if value is not None else str(number)
    return name.removeprefix(prefix).lower()


def _value(field: Any, value: Any) -> Any:
    from google.protobuf.descriptor import FieldDescriptor as F  # noqa: PLC0415

    if field.type == F.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Struct":
            from google.protobuf import json_format  # noqa: PLC0415

            return json_format.MessageToDict(value)
        return to_plain(value)
    if field.type == F.TYPE_ENUM:
        return enum_short_name(field.enum_type, value)
    return value


def to_plain(msg: Any) -> dict[str, Any]:
    """The fields protobuf's JSON mapping prints (set ones; proto3 scalars when not zero) under their proto
    names; repeated fields as lists, maps as dicts, nested messages the same way."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        is_repeated = getattr(field, "is_repeated", None)
        repeated = is_repeated if isinstance(is_repeated, bool) else field.label == field.LABEL_REPEATED
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            vfield = field.message_type.fields_by_name["value"]
            if value:
                out[field.name] = {k: _value(vfield, v) for k, v in value.items()}
        elif repeated:
            if value:
                out[field.name] = [_value(field, v) for v in value]
        elif field.has_presence:
            if msg.HasField(field.name):
                out[field.name] = _value(field, value)
        elif value != field.default_value:
            out[field.name] = _value(field, value)
    return out
