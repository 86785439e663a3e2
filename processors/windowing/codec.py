"""The versioned stored form of a row's aggregate states (JSON, via orjson)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from processors.pipeline import AggregateSpec

FORMAT_VERSION = 1


class IncompatibleState(ValueError):
    """Stored states that this pipeline definition cannot read."""


def encode_states(specs: Sequence[AggregateSpec[Any]], states: Sequence[Any]) -> bytes:
    """Serialize ``states`` (one per spec, in order)."""
    return orjson.dumps(
        {
            "format": FORMAT_VERSION,
            "aggregates": {
                spec.name: [
                    spec.aggregator.kind,
                    spec.aggregator.version,
                    spec.aggregator.to_stored(state),
                ]
                for spec, state in zip(specs, states, strict=True)
            },
        }
    )


def decode_states(specs: Sequence[AggregateSpec[Any]], blob: bytes) -> list[Any]:
    """The states in ``blob``, in spec order; raises :class:`IncompatibleState`."""
    document = orjson.loads(blob)
    if document.get("format") != FORMAT_VERSION:
        raise IncompatibleState(f"unknown stored state format {document.get('format')!r}")
    stored = document["aggregates"]
    expected = [spec.name for spec in specs]
    if sorted(stored) != sorted(expected):
        raise IncompatibleState(
            f"stored aggregates {sorted(stored)} differ from the pipeline's {sorted(expected)}: "
            "the pipeline definition changed; give it a new name or clear its rows"
        )
    states = []
    for spec in specs:
        kind, version, value = stored[spec.name]
        if kind != spec.aggregator.kind or version != spec.aggregator.version:
            raise IncompatibleState(
                f"aggregate {spec.name!r} is stored as {kind} v{version}, the pipeline has "
                f"{spec.aggregator.kind} v{spec.aggregator.version}"
            )
        states.append(spec.aggregator.from_stored(value))
    return states
