"""A throw-away PostgreSQL server on 127.0.0.1 for the index and qrscp tests.

Debian's ``postgresql`` package (``scripts/test.sh`` installs it when missing) gives
``initdb`` and ``pg_ctl``; the server runs as the ``postgres`` user (PostgreSQL refuses
root) from a fresh data folder with trust authentication on loopback only, and is
stopped and removed at the end of the test session.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)")
    return Path(found[-1]).parent


def _as_postgres(command: list[str]) -> list[str]:
    """Run as the postgres user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield an ``postgresql://postgres@127.0.0.1:PORT/postgres`` URL."""
    binaries = _bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="aionetdicom-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off"
    subprocess.run(
        _as_postgres(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url``; its URL."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    binaries = _bin_dir()
    subprocess.run(
        [str(binaries / "createdb"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", name],
        check=True,
        capture_output=True,
    )
    return url.rsplit("/", 1)[0] + f"/{name}"
