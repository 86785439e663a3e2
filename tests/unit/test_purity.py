"""The house rules of design.md section 2, enforced rather than hoped for.

The pure core (schemas, the windowing core, pipelines, query and the in-memory fakes)
imports no AWS SDK, no emulator and nothing from ``streams`` or ``shardflow``. The
windowing core and the schemas never read the clock: time is passed in.

The checks walk each module's syntax tree, so they see every import, including ones
inside functions and ``if TYPE_CHECKING`` blocks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN_IMPORTS = frozenset({"boto3", "botocore", "streams", "shardflow", "moto"})
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})

PURE_PATHS = [
    "schemas",
    "processors/windowing",
    "processors/pipeline.py",
    "processors/pipelines",
    "processors/query.py",
    "processors/query_pages.py",
    "processors/top_query.py",
    "processors/direct_load.py",
    "processors/sinks/memory.py",
    "streams/kpl.py",  # the KPL aggregation format: pure, though it lives with the I/O
]
CLOCK_FREE_PATHS = [
    "schemas",
    "processors/windowing",
    "processors/pipeline.py",
    "processors/pipelines",
    "streams/kpl.py",
]


def python_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for entry in paths:
        path = ROOT / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def imported_modules(tree: ast.AST) -> list[str]:
    """Every module an ``import`` or ``from ... import`` names, plus string literals given
    to ``importlib.import_module`` or ``__import__``."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                called in {"import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                names.append(first.value)
    return names


def forbidden_imports(source: str) -> list[str]:
    """The forbidden top-level packages ``source`` imports."""
    tree = ast.parse(source)
    return [name for name in imported_modules(tree) if name.split(".")[0] in FORBIDDEN_IMPORTS]


def clock_reads(source: str) -> list[str]:
    """Imports of the ``time`` module and calls such as ``datetime.now()``, with line numbers."""
    tree = ast.parse(source)
    found = [f"import {name}" for name in imported_modules(tree) if name.split(".")[0] == "time"]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_CALLS
        ):
            found.append(f"line {node.lineno}: .{node.func.attr}()")
    return found


# -- the checkers catch what they claim to catch --------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import boto3",
        "import botocore.exceptions",
        "from botocore.exceptions import ClientError",
        "import streams.runner as runner",
        "from streams import producer",
        "from shardflow.settings import Settings",
        "from moto import mock_aws",
        "def f():\n    import boto3\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import boto3\n",
        "import importlib\nimportlib.import_module('boto3')",
        "__import__('botocore')",
    ],
)
def test_import_checker_flags_forbidden_imports(source: str) -> None:
    """Each of these small sources would break the rule, and the checker says so."""
    assert forbidden_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        "import orjson",
        "from dataclasses import dataclass",
        "from processors.windowing.windows import Window",
        "from schemas.errors import InvalidEvent",
        "import streamsx",  # only whole package names count
        "from . import sibling",
    ],
)
def test_import_checker_allows_pure_imports(source: str) -> None:
    assert forbidden_imports(source) == []


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "from time import monotonic",
        "import time as clock",
        "from datetime import datetime\nx = datetime.now()",
        "import datetime\nx = datetime.datetime.utcnow()",
        "from datetime import date\nx = date.today()",
        "from datetime import UTC, datetime\nx = datetime.now(tz=UTC)",
    ],
)
def test_clock_checker_flags_clock_reads(source: str) -> None:
    assert clock_reads(source)


@pytest.mark.parametrize(
    "source",
    [
        "from datetime import UTC, datetime\nx = datetime.fromtimestamp(0, tz=UTC)",
        "from datetime import time",  # the time-of-day class, not the clock
        "import threading",
    ],
)
def test_clock_checker_allows_explicit_times(source: str) -> None:
    assert clock_reads(source) == []


# -- the project obeys them ------------------------------------------------------------


def test_the_pure_file_set_is_what_we_think_it_is() -> None:
    """Guard against a vacuous pass: the walk finds the modules the rules are about."""
    found = {path.relative_to(ROOT).as_posix() for path in python_files(PURE_PATHS)}
    for expected in [
        "schemas/page_views.py",
        "schemas/timestamps.py",
        "processors/windowing/engine.py",
        "processors/windowing/aggregators.py",
        "processors/pipeline.py",
        "processors/pipelines/page_views.py",
        "processors/query.py",
        "processors/query_pages.py",
        "processors/top_query.py",
        "processors/direct_load.py",
        "processors/sinks/memory.py",
        "streams/kpl.py",
    ]:
        assert expected in found


@pytest.mark.parametrize(
    "path", python_files(PURE_PATHS), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_pure_module_imports_no_aws_and_no_shell(path: Path) -> None:
    assert forbidden_imports(path.read_text()) == []


@pytest.mark.parametrize(
    "path", python_files(CLOCK_FREE_PATHS), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_core_module_never_reads_the_clock(path: Path) -> None:
    assert clock_reads(path.read_text()) == []


def test_importing_the_pure_core_loads_no_aws_sdk() -> None:
    """The same rule at run time, transitively: a fresh interpreter that imports every
    pure module (and their package ``__init__`` files) has not loaded boto3 or streams."""
    modules = [
        "schemas",
        "schemas.page_views",
        "schemas.timestamps",
        "processors.windowing.engine",
        "processors.windowing.results",
        "processors.pipelines",
        "processors.query",
        "processors.sinks.memory",
        "processors.sinks.dead_letters",
    ]
    program = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in modules)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        + repr(sorted(FORBIDDEN_IMPORTS))
        + ")\nprint(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == ""
