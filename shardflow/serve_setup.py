"""What ``shardflow serve`` needs before it listens: a store per pipeline (or the reason
its table cannot be read, which its endpoints then answer with 503), and the token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processors.pipeline import Pipeline
from shardflow.serve_api import PipelineReader
from shardflow.settings import Settings
from shardflow.wiring import make_store
from streams.aws_errors import ResourceMissing

if TYPE_CHECKING:
    from streams.clients import AwsClients

TOKEN_ENV = "SHARDFLOW_SERVE_TOKEN"


class BadToken(ValueError):
    """A token file that cannot be used."""


def readers_for(
    clients: AwsClients, settings: Settings, pipelines: Sequence[Pipeline[Any]]
) -> dict[str, PipelineReader]:
    """One reader per pipeline. A missing table does not stop the server (``shardflow up``
    may come later): that pipeline's endpoints answer 503 saying so, until a restart."""
    readers = {}
    for pipeline in pipelines:
        try:
            readers[pipeline.name] = PipelineReader(
                pipeline, make_store(clients, settings, pipeline)
            )
        except ResourceMissing as exc:
            readers[pipeline.name] = PipelineReader(pipeline, None, str(exc))
    return readers


def read_token(path: str | None, environ: Mapping[str, str]) -> str | None:
    """The bearer token: the first line of ``path``, else ``SHARDFLOW_SERVE_TOKEN``, else
    None (no token: fine on loopback)."""
    if path is not None:
        try:
            lines = Path(path).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadToken(f"cannot read the token file {path}: {exc}") from None
        token = lines[0].strip() if lines else ""
        where = f"the token file {path}"
    else:
        token = environ.get(TOKEN_ENV, "").strip()
        where = TOKEN_ENV
        if not token:
            return None
    if len(token) < 16 or not token.isascii() or not token.isprintable():
        raise BadToken(f"{where} must hold a token of at least 16 printable ASCII characters")
    return token
