"""A private PostgreSQL server for the tests: Debian's `postgresql` binaries, a fresh cluster in a
temporary folder on a free port, owned by the `postgres` user when we are root (the server refuses
to run as root), stopped and removed afterwards. Nothing of the machine's own clusters is touched.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class Unavailable(RuntimeError):
    """No server can start here; the message says why."""


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    p = shutil.which("pg_ctl")
    return Path(p).resolve().parent if p else None


def _install() -> None:
    """Debian's postgresql when we are root and it is missing (setup.sh test does the same)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"], env=env,
                   capture_output=True, timeout=600)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """start() -> a server at `url(db)`; create_db(name); stop()."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        if self.bindir is None:
            _install()
            self.bindir = _bindir()
        if self.bindir is None:
            raise Unavailable("no PostgreSQL server binaries (apt-get install postgresql)")
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no 'postgres' user to run the server as") from None
            self.user = "postgres"
        # directly under the temp folder: pytest's own tmp folders are root-only (0700)
        self.root = Path(tempfile.mkdtemp(prefix="isoflop-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.started = False

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def start(self) -> "Server":
        if self.user:
            shutil.chown(self.root, self.user, self.user)
        p = self._run("initdb", "-D", str(self.data), "-U", "isoflop", "--auth=trust", "-E", "UTF8", "--no-sync",
                      "--no-instructions")
        if p.returncode:
            raise Unavailable(f"initdb failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
        # fsync off: a throwaway cluster; sockets in our own folder, TCP on localhost only
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        p = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "server.log"), "-w",
                      "-t", "60", "start")
        if p.returncode:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else p.stderr
            raise Unavailable(f"pg_ctl start failed: {log.strip().splitlines()[-1:]}")
        self.started = True
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://isoflop@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=isoflop dbname=postgres",
                             autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def sql(self, db: str, statement: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=isoflop dbname={db}", autocommit=True) as c:
            c.execute(statement)

    def stop(self) -> None:
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False
        t0 = time.time()
        while time.time() - t0 < 10:
            try:
                shutil.rmtree(self.root)
                return
            except OSError:
                time.sleep(0.2)
