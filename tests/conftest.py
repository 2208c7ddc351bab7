"""Run every async test on both asyncio and trio (anyio's pytest plugin)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both event loops anyio supports."""
    return str(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    """Mark coroutine tests for anyio before collection, so parametrization sees it."""
    if (
        collector.funcnamefilter(name)  # type: ignore[attr-defined]
        and inspect.iscoroutinefunction(obj)
        and not any(mark.name == "anyio" for mark in getattr(obj, "pytestmark", []))
    ):
        pytest.mark.anyio(obj)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 for this test session (see tests/postgres.py)."""
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url
