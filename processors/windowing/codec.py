"""The versioned stored form of a row's aggregate states (JSON, via orjson)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from processors.pipeline import AggregateSpec

FORMAT_VERSION = 1

_dumps = orjson.dumps


class IncompatibleState(ValueError):
    """Stored states that this pipeline definition cannot read."""


class StateCodec:
    """Encodes one pipeline's states; built once per engine, since every flush encodes
    every dirty row."""

    def __init__(self, specs: Sequence[AggregateSpec[Any]], windows: str | None = None) -> None:
        """``windows`` (the pipeline's ``windows.describe()``) is stored with the states, so
        rows written under other windows (a changed hopping step, say) are refused."""
        self._specs = tuple(specs)
        self._windows = windows
        self._parts = tuple(
            (spec.name, spec.aggregator.kind, spec.aggregator.version, spec.aggregator.to_stored)
            for spec in specs
        )

    def encode(self, states: Sequence[Any]) -> bytes:
        """Serialize ``states`` (one per spec, in order)."""
        if len(states) != len(self._parts):
            raise ValueError(f"{len(states)} states for {len(self._parts)} aggregates")
        aggregates = {}
        for (name, kind, version, to_stored), state in zip(self._parts, states):  # noqa: B905
            aggregates[name] = (kind, version, to_stored(state))
        if self._windows is None:
            return _dumps({"format": FORMAT_VERSION, "aggregates": aggregates})
        return _dumps(
            {"format": FORMAT_VERSION, "windows": self._windows, "aggregates": aggregates}
        )

    def decode(self, blob: bytes) -> list[Any]:
        return decode_states(self._specs, blob, self._windows)


def encode_states(specs: Sequence[AggregateSpec[Any]], states: Sequence[Any]) -> bytes:
    """Serialize ``states`` (one per spec, in order)."""
    return StateCodec(specs).encode(states)


def decode_states(
    specs: Sequence[AggregateSpec[Any]], blob: bytes, windows: str | None = None
) -> list[Any]:
    """The states in ``blob``, in spec order; raises :class:`IncompatibleState`, also when
    ``windows`` is given and the blob was written under other windows."""
    document = orjson.loads(blob)
    if document.get("format") != FORMAT_VERSION:
        raise IncompatibleState(f"unknown stored state format {document.get('format')!r}")
    stored_windows = document.get("windows")
    if windows is not None and stored_windows is not None and stored_windows != windows:
        raise IncompatibleState(
            f"stored rows were written with {stored_windows} windows, the pipeline now uses "
            f"{windows}: the pipeline definition changed; give it a new name"
        )
    stored = document["aggregates"]
    expected = [spec.name for spec in specs]
    if not set(stored) <= set(expected):
        raise IncompatibleState(
            f"stored aggregates {sorted(stored)} differ from the pipeline's {sorted(expected)}: "
            "the pipeline definition changed; give it a new name or clear its rows"
        )
    states = []
    for spec in specs:
        if spec.name not in stored:
            # An aggregate added to the pipeline after the row was written: the row holds
            # none of it, which is its initial state.
            states.append(spec.aggregator.initial())
            continue
        kind, version, value = stored[spec.name]
        if kind != spec.aggregator.kind or version != spec.aggregator.version:
            raise IncompatibleState(
                f"aggregate {spec.name!r} is stored as {kind} v{version}, the pipeline has "
                f"{spec.aggregator.kind} v{spec.aggregator.version}"
            )
        try:
            states.append(spec.aggregator.from_stored(value))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            # A sketch's settings changed (precision, accuracy, capacity) or the blob is
            # damaged: refuse it with the aggregate's name, as for any definition change.
            raise IncompatibleState(
                f"aggregate {spec.name!r} cannot read its stored state ({exc}): the "
                "pipeline definition changed; give it a new name or clear its rows"
            ) from exc
    return states
