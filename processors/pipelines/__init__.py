"""The pipelines that ship with shardflow, by name."""

from __future__ import annotations

from typing import Any

from processors.pipeline import Pipeline
from processors.pipelines.device_sessions import DEVICE_SESSIONS
from processors.pipelines.page_views import PAGE_VIEWS

PIPELINES: dict[str, Pipeline[Any]] = {
    pipeline.name: pipeline for pipeline in (PAGE_VIEWS, DEVICE_SESSIONS)
}


class UnknownPipeline(KeyError):
    """A pipeline name that is not registered."""

    def __str__(self) -> str:
        return f"unknown pipeline {self.args[0]!r}; known pipelines: {', '.join(sorted(PIPELINES))}"


def get_pipeline(name: str) -> Pipeline[Any]:
    """The pipeline called ``name``; raises :class:`UnknownPipeline` listing the known ones."""
    try:
        return PIPELINES[name]
    except KeyError:
        raise UnknownPipeline(name) from None
