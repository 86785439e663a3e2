"""The OpenAPI description of ``shardflow serve``'s JSON API (served at /openapi.json).

Written by hand from the behaviour in shardflow/serve_api.py, and checked against it by
tests/integration/test_serve_http.py, which runs schemathesis over real HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from processors.query_pages import MAX_LIMIT
from processors.top_query import MAX_K
from processors.windowing.engine import MAX_KEY_BYTES
from shardflow.serve_api import MAX_KEYS, MAX_RANGE_WINDOWS
from shardflow.times import MAX_LENGTH, TIME_PATTERN

TIME_FORMS = (
    "ISO-8601 with a zone (2026-11-27T10:00:00Z), epoch milliseconds, `now`, or a time "
    "ago: `30s`, `15m`, `2h`, `7d`, `1w`"
)

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "a parameter is wrong; `error` says which and how",
        401: "the bearer token is missing or wrong",
        404: "no such pipeline",
        503: "the pipeline's results table cannot be read (missing, or AWS unreachable)",
    }
    return {str(code): _json(_ERROR, meaning[code]) for code in codes}


def _time_param(name: str, where: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": f"{description} {TIME_FORMS}.",
        "schema": {"type": "string", "maxLength": MAX_LENGTH, "pattern": TIME_PATTERN},
        "example": "15m" if where == "query" else "now",
    }


def _limit() -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "description": "windows in one page",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 1000},
    }


def _cursor() -> dict[str, Any]:
    return {
        "name": "cursor",
        "in": "query",
        "description": "`next_cursor` of the previous page, to get the next one",
        "schema": {"type": "string", "minLength": 1, "maxLength": 2000},
    }


def openapi(
    pipelines: Sequence[str], aggregates: Sequence[str], token_required: bool
) -> dict[str, Any]:
    """The description of the API serving ``pipelines``, whose numeric aggregates are
    ``aggregates``."""
    pipeline_param = {
        "name": "pipeline",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(pipelines)},
    }
    auth = (401,) if token_required else ()
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "shardflow query API",
            "version": "1",
            "description": (
                "Read-only access to shardflow's windowed aggregates: one key (or several) "
                "over a time range, all keys of one window, and the top keys of a window. "
                "Windows that are not final yet are merged from their partial rows on read, "
                "so every answer holds every event processed so far."
            ),
        },
        "paths": {
            "/api/v1/pipelines": {
                "get": {
                    "operationId": "listPipelines",
                    "summary": "The pipelines, their windows and aggregates",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/PipelineList"}, "pipelines"),
                        **_errors(*auth),
                    },
                }
            },
            "/api/v1/pipelines/{pipeline}": {
                "get": {
                    "operationId": "getPipeline",
                    "summary": "One pipeline, with how far its windows are final",
                    "parameters": [pipeline_param],
                    "responses": {
                        "200": _json(
                            {"$ref": "#/components/schemas/PipelineStatus"}, "the pipeline"
                        ),
                        **_errors(*auth, 404, 503),
                    },
                }
            },
            "/api/v1/pipelines/{pipeline}/windows": {
                "get": {
                    "operationId": "queryWindows",
                    "summary": "Windows overlapping a time range, of some keys or of all",
                    "description": (
                        "With `key`: those keys' windows, by key, then window start. "
                        "Without: every key's, by window start, then key. The range "
                        f"defaults to the last hour and covers at most {MAX_RANGE_WINDOWS:,} "
                        "of the pipeline's window starts; pages hold `limit` windows."
                    ),
                    "parameters": [
                        pipeline_param,
                        {
                            "name": "key",
                            "in": "query",
                            "description": "only these keys (repeat the parameter)",
                            "style": "form",
                            "explode": True,
                            "schema": {
                                "type": "array",
                                "maxItems": MAX_KEYS,
                                "items": {"type": "string", "maxLength": MAX_KEY_BYTES},
                            },
                        },
                        _time_param(
                            "since",
                            "query",
                            "windows ending after this time (default: an hour before until).",
                        ),
                        _time_param(
                            "until", "query", "windows starting before this time (default: now)."
                        ),
                        _limit(),
                        _cursor(),
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/WindowsPage"}, "one page"),
                        **_errors(400, *auth, 404, 503),
                    },
                }
            },
            "/api/v1/pipelines/{pipeline}/windows/{window}": {
                "get": {
                    "operationId": "windowKeys",
                    "summary": "Every key of one window (not for session windows)",
                    "parameters": [
                        pipeline_param,
                        _time_param(
                            "window",
                            "path",
                            "the window containing this time (the latest starting one, for hopping "
                            "windows).",
                        ),
                        _limit(),
                        _cursor(),
                    ],
                    "responses": {
                        "200": _json(
                            {"$ref": "#/components/schemas/WindowKeys"},
                            "one page of the window's keys, by key",
                        ),
                        **_errors(400, *auth, 404, 503),
                    },
                }
            },
            "/api/v1/pipelines/{pipeline}/top": {
                "get": {
                    "operationId": "topKeys",
                    "summary": "The top keys of one window by a numeric aggregate",
                    "parameters": [
                        pipeline_param,
                        {
                            "name": "by",
                            "in": "query",
                            "required": True,
                            "description": "the aggregate to rank by (a `rankable` one of the "
                            "pipeline's aggregates)",
                            "schema": {"type": "string", "enum": sorted(set(aggregates))},
                            "example": "views",
                        },
                        {
                            "name": "k",
                            "in": "query",
                            "description": "how many keys",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_K,
                                "default": 10,
                            },
                        },
                        _time_param(
                            "window",
                            "query",
                            "the window containing this time (default: the latest window with "
                            "data).",
                        ),
                    ],
                    "responses": {
                        "200": _json(
                            {"$ref": "#/components/schemas/TopKeys"},
                            "the ranking; `top` is empty and the window null when there is no data",
                        ),
                        **_errors(400, *auth, 404, 503),
                    },
                }
            },
        },
        "components": {"schemas": _schemas()},
    }
    if token_required:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        spec["security"] = [{"bearer": []}]
    return spec


def _schemas() -> dict[str, Any]:
    time_text = {"type": "string", "description": "ISO-8601, UTC"}
    nullable_time = {**time_text, "nullable": True}
    window_result = {
        "type": "object",
        "description": (
            "One window of one key; one more field per aggregate (a number, null, or "
            "for top-k a list of [item, count])"
        ),
        "required": ["pipeline", "key", "window_start", "window_end", "final"],
        "properties": {
            "pipeline": {"type": "string"},
            "key": {"type": "string"},
            "window_start": time_text,
            "window_end": time_text,
            "final": {"type": "boolean"},
        },
        "additionalProperties": True,
    }
    results = {"type": "array", "items": {"$ref": "#/components/schemas/WindowResult"}}
    cursor = {"type": "string", "nullable": True, "description": "null: the last page"}
    pipeline = {
        "type": "object",
        "required": ["name", "description", "windows", "allowed_lateness_ms", "aggregates"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "windows": {
                "type": "object",
                "required": ["kind", "size_ms", "step_ms", "gap_ms"],
                "properties": {
                    "kind": {"type": "string", "enum": ["tumbling", "hopping", "session"]},
                    "size_ms": {"type": "integer", "nullable": True},
                    "step_ms": {"type": "integer", "nullable": True},
                    "gap_ms": {"type": "integer", "nullable": True},
                },
            },
            "allowed_lateness_ms": {"type": "integer"},
            "aggregates": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "numeric", "rankable"],
                    "properties": {
                        "name": {"type": "string"},
                        "numeric": {"type": "boolean", "description": "its values are numbers"},
                        "rankable": {"type": "boolean", "description": "`top` can rank by it"},
                    },
                },
            },
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "WindowResult": window_result,
        "Pipeline": pipeline,
        "PipelineList": {
            "type": "object",
            "required": ["pipelines"],
            "properties": {
                "pipelines": {"type": "array", "items": {"$ref": "#/components/schemas/Pipeline"}}
            },
        },
        "PipelineStatus": {
            "allOf": [
                {"$ref": "#/components/schemas/Pipeline"},
                {
                    "type": "object",
                    "required": ["shards", "final_through"],
                    "properties": {
                        "shards": {"type": "integer", "minimum": 0},
                        "final_through": {
                            "type": "string",
                            "nullable": True,
                            "description": (
                                "windows ending by this time are final (`end`: all are; null: none)"
                            ),
                        },
                    },
                },
            ]
        },
        "WindowsPage": {
            "type": "object",
            "required": ["pipeline", "keys", "since", "until", "windows", "next_cursor"],
            "properties": {
                "pipeline": {"type": "string"},
                "keys": {"type": "array", "items": {"type": "string"}},
                "since": time_text,
                "until": time_text,
                "windows": results,
                "next_cursor": cursor,
            },
        },
        "WindowKeys": {
            "type": "object",
            "required": [
                "pipeline",
                "window_start",
                "window_end",
                "final",
                "keys",
                "windows",
                "next_cursor",
            ],
            "properties": {
                "pipeline": {"type": "string"},
                "window_start": time_text,
                "window_end": time_text,
                "final": {"type": "boolean"},
                "keys": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "how many keys the window has",
                },
                "windows": results,
                "next_cursor": cursor,
            },
        },
        "TopKeys": {
            "type": "object",
            "required": [
                "pipeline",
                "aggregate",
                "window_start",
                "window_end",
                "final",
                "keys",
                "top",
            ],
            "properties": {
                "pipeline": {"type": "string"},
                "aggregate": {"type": "string"},
                "window_start": nullable_time,
                "window_end": nullable_time,
                "final": {"type": "boolean"},
                "keys": {"type": "integer", "minimum": 0},
                "top": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["rank", "key", "value"],
                        "properties": {
                            "rank": {"type": "integer", "minimum": 1},
                            "key": {"type": "string"},
                            "value": {"type": "number"},
                        },
                    },
                },
            },
        },
    }
