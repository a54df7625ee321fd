"""A real PostgreSQL server for the tests, started by the suite itself (as pytest-postgresql does).

``initdb`` into a temporary folder, ``postgres`` on a free loopback port with its socket in that folder,
torn down at the end of the session. PostgreSQL refuses to run as root, so as root the server runs as
the ``postgres`` system user (Debian's package creates it), switched to in the child process (as
``runuser`` would), so the server is our direct child and a SIGTERM reaches it. Binaries come from
``$CALLPULSE_PG_BIN``, Debian's /usr/lib/postgresql/<version>/bin, or PATH. Without them the tests skip
with the reason, or fail under ``CALLPULSE_REQUIRE_PEERS=1`` (CI).
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import skip_or_fail

_INSTALL_HINT = "Debian package postgresql (scripts/system_packages.sh installs it)"


def _pg_bindir() -> Path | None:
    env = os.environ.get("CALLPULSE_PG_BIN")
    if env and (Path(env) / "initdb").is_file():
        return Path(env)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running throwaway server; ``new_database()`` gives each test its own empty database."""

    host: str
    port: int
    user: str
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def new_database(self, prefix: str = "t") -> str:
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres(base: Path) -> tuple[PostgresServer, subprocess.Popen, Path]:
    bindir = _pg_bindir()
    if bindir is None:
        skip_or_fail(f"PostgreSQL server binaries (initdb, postgres) not found: {_INSTALL_HINT}",
                     flag="CALLPULSE_REQUIRE_PEERS")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install 'psycopg[binary]')", flag="CALLPULSE_REQUIRE_PEERS")
    run_as: dict = {}
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            skip_or_fail("running as root and no 'postgres' user to run the server as: " + _INSTALL_HINT,
                         flag="CALLPULSE_REQUIRE_PEERS")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        base.chmod(0o700)
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                  "env": {**os.environ, "HOME": str(base), "USER": "postgres", "LOGNAME": "postgres"}}
    data = base / "data"
    user = "callpulse"
    init = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust",
                           "-E", "UTF8", "--locale=C", "--no-sync"], capture_output=True, text=True, timeout=120, cwd=base, **run_as)
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr.strip()[-1500:]}")
    port = _free_port()
    log = base / "postgres.log"
    cmd = [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
           "-k", str(base), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
           "-c", "max_connections=100", "-c", "shared_buffers=32MB"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=base,
                                **run_as)
    server = PostgresServer("127.0.0.1", port, user)
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"postgres exited with {proc.returncode}: {log.read_text(errors='replace')[-1500:]}")
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                proc.terminate()
                pytest.fail(f"postgres did not accept connections within 60 s: {log.read_text(errors='replace')[-1500:]}")
            time.sleep(0.2)
    return server, proc, base


def stop_postgres(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: "smart" shutdown; fall back to SIGQUIT (immediate)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(3)
            proc.wait(timeout=20)


@pytest.fixture(scope="session")
def postgres_server():
    base = Path(tempfile.mkdtemp(prefix="callpulse-pg-"))
    try:
        server, proc, _ = start_postgres(base)
        try:
            yield server
        finally:
            stop_postgres(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)
