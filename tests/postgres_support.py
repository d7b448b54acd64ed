"""A throwaway PostgreSQL cluster for the photo index tests: initdb into a temporary folder, a
server on a Unix socket there (no TCP port), stopped and removed at the end of the session.

Debian's server binaries (``apt-get install postgresql``; .ci/run installs it). initdb refuses
to run as root, so as root the cluster runs as the ``postgres`` user through ``runuser``. Skips
with the reason when there is no server to start.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Where Debian puts the server binaries (the newest version first).
BIN_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)


def _bin(name: str) -> str | None:
    for folder in BIN_DIRS:
        if Path(folder, name).exists():
            return str(Path(folder, name))
    return shutil.which(name)


def _as_owner(command: list[str]) -> list[str]:
    """Root cannot run a cluster: run it as ``postgres`` (the Debian package's user)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    root = Path(tempfile.mkdtemp(prefix="cardamage-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    try:
        subprocess.run(
            _as_owner([initdb, "-D", str(data), "-A", "trust", "-U", "cardamage"]), **run
        )
        options = f"-k {sock} -c listen_addresses='' -c fsync=off"
        subprocess.run(
            _as_owner(
                [pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(root / "log"), "start"]
            ),
            **run,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        shutil.rmtree(root, ignore_errors=True)
        detail = getattr(e, "stderr", "") or str(e)
        pytest.skip(f"could not start a PostgreSQL cluster: {detail.strip()[-300:]}")
    try:
        yield f"postgresql://cardamage@/postgres?host={sock}"
    finally:
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
