"""A throw-away PostgreSQL server for tests and benchmarks: ``initdb`` in a temporary folder,
``pg_ctl`` on a free port bound to 127.0.0.1, run as the unprivileged ``postgres`` user when we
are root (PostgreSQL refuses to run as root). Debian's ``postgresql`` package provides the
binaries (``.ci/run`` installs it). Without them tests skip with a hint, except in CI
(``CI=true``), where a missing server is a failure."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

HINT = "PostgreSQL server binaries not found: apt-get install -y postgresql (Debian)"


def find_bin(name: str) -> str | None:
    """``initdb`` / ``pg_ctl`` from $PATH or Debian's /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return shutil.which(name) or (found[-1] if found else None)


def require_binaries() -> tuple[str, str]:
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(HINT + " (CI must run the PostgreSQL tests)")
    pytest.skip(HINT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running server; superuser ``postgres`` with ``password``, scram auth over TCP."""

    def __init__(self, fsync: bool = False):
        initdb, self._pg_ctl = require_binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="lfw-pg-"))
        self.port, self.password = _free_port(), secrets.token_hex(12)
        self._as = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if self._as:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self.data = self.dir / "data"
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-sync",
                  "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}"
                   + ("" if fsync else " -c fsync=off"))
        self._run(self._pg_ctl, "-D", str(self.data), "-o", options, "-l",
                  str(self.dir / "log"), "-w", "start")

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, timeout=120)

    def url(self, dbname: str = "postgres", user: str = "postgres",
            password: str | None = None) -> str:
        password = self.password if password is None and user == "postgres" else password
        auth = user + (f":{password}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, *statements: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def new_database(self) -> str:
        """A fresh empty database; returns its name."""
        name = "t_" + secrets.token_hex(6)
        self.sql(f"CREATE DATABASE {name}")
        return name

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run(self._pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
