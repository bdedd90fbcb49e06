"""A throwaway PostgreSQL server for tests: ``initdb`` into a temp dir, ``postgres`` on a free loopback port.

The server binaries come from PATH or ``/usr/lib/postgresql/<version>/bin`` (Debian's layout);
``make test`` installs them with apt-get when they are missing. PostgreSQL refuses to run as
root, so when this process is root both ``initdb`` and ``postgres`` run as ``nobody`` (the data
and socket directory is created for that user under /tmp, which every user can traverse).
Durability is switched off (``fsync=off``): the data dies with the test session anyway.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class PostgresUnavailable(RuntimeError):
    pass


def find_bin_dir() -> Path | None:
    """Directory holding ``initdb`` and ``postgres``; the newest Debian version wins over nothing."""
    on_path = shutil.which("initdb")
    if on_path:
        d = Path(os.path.realpath(on_path)).parent
        if (d / "postgres").exists():
            return d
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    _n: int = field(default=0)

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients, no checkpoint wait
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


def start(timeout: float = 30.0) -> PgServer:
    bindir = find_bin_dir()
    if bindir is None:
        raise PostgresUnavailable("no PostgreSQL server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql")
    root = Path(tempfile.mkdtemp(prefix="wanflash-pg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    data = root / "data"
    init = subprocess.run([str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                           "--no-sync"], cwd=root, capture_output=True, text=True, **run_as)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-2000:]}")
    port = _free_port()
    proc = subprocess.Popen(
        [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"), **run_as)
    server = PgServer(root, port, proc)
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(server.url, connect_timeout=2):
                return server
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (root / "server.log").read_text(errors="replace")[-2000:]
                server.stop()
                raise PostgresUnavailable(f"postgres did not start: {log}") from None
            time.sleep(0.05)
