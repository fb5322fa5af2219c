"""A private PostgreSQL server in a folder, for fault tests and the chaos benchmark.

Outages are real only when a server really stops; stopping the machine's shared server would
also stop everything else that uses it. :class:`PostgresServer` runs its own cluster from the
PostgreSQL installed here (``initdb`` and ``pg_ctl``, found on ``PATH`` or under
``/usr/lib/postgresql/*/bin``), on its own port and socket folder, so that a test can stop it
for as long as it likes. As root, the server runs as the ``postgres`` user, which PostgreSQL
requires.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresServer", "find_pg_bin", "postgres_server"]


def find_pg_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in ``folder``; :meth:`start`, :meth:`stop` and :meth:`url`.

    Args:
        folder: an empty or missing folder (made private to the server's user).
        port: the TCP port on 127.0.0.1 (None: a free one).
        bin_dir: the folder of ``initdb`` and ``pg_ctl`` (None: :func:`find_pg_bin`).
        settings: ``postgresql.conf`` settings (``{"max_connections": "100"}``).
    """

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        bin_dir: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        found = bin_dir or find_pg_bin()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed here (no initdb on PATH)")
        self.bin = found
        self.folder = folder
        self.data = folder / "data"
        self.port = port or _free_port()
        self.settings = {"fsync": "off", "listen_addresses": "'127.0.0.1'", **(settings or {})}
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def init(self) -> None:
        """Create the cluster (trust authentication for local connections)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            pw = pwd.getpwnam(self._user)
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
        self.folder.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"port = {self.port}\nunix_socket_directories = '{self.folder}'\n")
            for key, value in self.settings.items():
                f.write(f"{key} = {value}\n")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if not self.data.is_dir():
            self.init()
        log = self.folder / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: as on a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        """Stop the server (if it runs) and delete its folder."""
        if self.data.is_dir() and self.running:
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(**kwargs: object) -> Iterator[PostgresServer]:
    """A started :class:`PostgresServer` in a fresh temporary folder, deleted afterwards.

    The folder is made under ``/tmp`` (not a test's private tmp folder, whose parents the
    server's user may not enter).
    """
    folder = Path(tempfile.mkdtemp(prefix="vivit-hpo-pg-"))
    server = PostgresServer(folder, **kwargs)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.close()
