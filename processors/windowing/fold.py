"""Compiling a pipeline's aggregates into one function that adds an event to a row.

The engine calls it once per event and window, so it is built once per pipeline, the way
``dataclasses`` builds ``__init__``: from each aggregator's ``inline_add`` (a statement
with ``{S}`` for the state and ``{V}`` for the value, e.g. ``"{S} += {V}"``). Aggregators
without one are called through their ``add`` method. Values extracted by the same
function are extracted once. The generated source is kept on the function
(``fold.source``) for anyone who wants to read it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from processors.pipeline import AggregateSpec

Fold = Callable[[list[Any], Any], None]


def generic_fold(specs: Sequence[AggregateSpec[Any]]) -> Fold:
    """The reference: each aggregator's ``add``, one call at a time."""
    updaters = [(index, spec.aggregator.add, spec.value) for index, spec in enumerate(specs)]

    def fold(states: list[Any], event: Any) -> None:
        for index, add, value_of in updaters:
            value = event if value_of is None else value_of(event)
            if value is not None:
                states[index] = add(states[index], value)

    return fold


def compile_fold(specs: Sequence[AggregateSpec[Any]]) -> Fold:
    """One function doing what :func:`generic_fold` does, with the adds inlined."""
    namespace: dict[str, Any] = {}
    body: list[str] = []
    extracted: dict[int, str] = {}
    for index, spec in enumerate(specs):
        state = f"states[{index}]"
        template: str | None = getattr(spec.aggregator, "inline_add", None)
        if spec.value is None:
            value = "event"
        else:
            value = extracted.get(id(spec.value), "")
            if not value:
                value = f"value_{index}"
                namespace[f"get_{index}"] = spec.value
                body.append(f"{value} = get_{index}(event)")
                extracted[id(spec.value)] = value
        if template is None:
            namespace[f"add_{index}"] = spec.aggregator.add
            statement = [f"{state} = add_{index}({state}, {value})"]
        else:
            statement = template.format(S=state, V=value).splitlines()
        body.append(f"if {value} is not None:")  # None values are skipped, as add is never fed them
        body.extend(f"    {line}" for line in statement)
    source = "def fold(states, event):\n" + "".join(f"    {line}\n" for line in body or ["pass"])
    exec(compile(source, f"<fold of {len(specs)} aggregates>", "exec"), namespace)
    fold: Fold = namespace["fold"]
    fold.source = source  # type: ignore[attr-defined]
    return fold
