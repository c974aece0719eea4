"""Run a real BIND ``named`` process for tests and the local runner.

Pure standard library: no dnspython, no Pulumi. One :class:`NamedProcess`
drives one ``named -g`` (foreground, all logging to stderr) whose output goes
to a log file. Every wait is a bounded poll; stopping signals our own child
by its pid only (SIGTERM, then SIGKILL).

Things ``named`` needs so that several can run side by side on one machine
(the configuration is the caller's, this module only runs it):

* ``listen-on port N { 127.0.0.1; };`` and ``listen-on-v6 { none; };`` --
  named only binds addresses that exist on an interface, so on a plain
  loopback use 127.0.0.1 with distinct ports;
* its own writable ``directory``, ``pid-file``, ``session-keyfile``,
  ``managed-keys-directory``, ``dump-file`` and ``statistics-file``;
* ``controls { };`` unless it really wants an rndc channel: without a
  ``controls`` statement named tries 127.0.0.1#953 with the system rndc.key,
  which collides as soon as two run at once.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Protocol

INSTALL_HINT = "apt-get install bind9 bind9-utils bind9-dnsutils"

#: name of the file (inside the instance's workdir) where we record our child's pid
PID_FILE_NAME = "named-process.pid"


class NamedNotFound(RuntimeError):
    """No ``named`` binary on this machine."""


class NamedStartError(RuntimeError):
    """named exited early or did not become ready in time."""


class HostPort(Protocol):
    """Anything with ``host`` and ``port`` (e.g. ``bind9_topology.dns.checks.Endpoint``)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def find_named() -> str:
    """Path of the ``named`` binary: ``$PATH`` first, then ``/usr/sbin/named``."""
    found = shutil.which("named")
    if found:
        return found
    for candidate in ("/usr/sbin/named", "/usr/local/sbin/named"):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise NamedNotFound(
        f"BIND 'named' was not found on PATH or in /usr/sbin. Install it with: {INSTALL_HINT}"
    )


#: the only variables named inherits: it reads its key from the key file, never from the
#: environment, so $BIND9_TSIG_SECRET, PULUMI_CONFIG and the like never reach it
#: (/proc/<pid>/environ of a long-running daemon is a needless copy of a secret)
ENV_ALLOWED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR")


def named_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a named child: an allowlist of *environ* (default os.environ)."""
    source = os.environ if environ is None else environ
    env = {k: source[k] for k in ENV_ALLOWED if k in source}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return env


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1", *, attempts: int = 200) -> int:
    """A port on *host* that is free for both UDP and TCP right now.

    Ports already returned by this process are not returned again, so two
    servers started in one test session do not race for the same number.
    """
    for _ in range(attempts):
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            if port in _handed_out:
                continue
            try:
                udp.bind((host, port))
            except OSError:
                continue
            _handed_out.add(port)
            return int(port)
        finally:
            tcp.close()
            udp.close()
    # fall back to random probing in the ephemeral-free low range
    for _ in range(attempts):
        port = random.randint(20000, 30000)
        if port in _handed_out:
            continue
        if _port_free(host, port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")


def _port_free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


# --------------------------------------------------------------------------
# a minimal stdlib SOA probe, only for readiness


def soa_status(host: str, port: int, zone: str, timeout: float = 0.5) -> tuple[int, bool] | None:
    """Send one UDP SOA query; return ``(rcode, aa_bit)`` or None if no answer.

    Not a TSIG check (that is bind9_topology.dns.checks.query_soa): the start-up wait only
    needs to know that named answers authoritatively for the zone.
    """
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    try:
        answer = dns.query.udp(query, host, port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):  # timeout, refused port, a bad reply
        return None
    return answer.rcode(), bool(answer.flags & dns.flags.AA)


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------


class NamedProcess:
    """One ``named -g`` child process.

    >>> p = NamedProcess()
    >>> p.start(conf, workdir, workdir / "named.log")   # doctest: +SKIP
    >>> p.wait_ready(("127.0.0.1", port), ["example.com"], timeout=10)  # doctest: +SKIP
    >>> p.stop()  # doctest: +SKIP
    """

    def __init__(
        self, named: str | None = None, *, threads: int | None = 1, name: str = "named"
    ) -> None:
        self.named = named
        self.threads = threads
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf_path: Path | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self._log_fh: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------

    def command(self, conf_path: str | os.PathLike[str]) -> list[str]:
        binary = self.named or find_named()
        cmd = [binary, "-g", "-c", str(conf_path)]
        if self.threads:
            cmd += ["-n", str(self.threads)]
        return cmd

    def start(
        self,
        conf_path: str | os.PathLike[str],
        workdir: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
    ) -> int:
        """Start ``named -g -c conf_path``; stdout and stderr go to *log_path*.

        Returns the child's pid, also written to ``workdir/named-process.pid``.
        """
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.conf_path = Path(conf_path).resolve()
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_path).resolve()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command(self.conf_path)
        self._log_fh = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to forward, not named's
            env=named_environment(),
        )
        (self.workdir / PID_FILE_NAME).write_text(f"{self.proc.pid}\n")
        return self.proc.pid

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def reload(self) -> None:
        """Ask named to reload its configuration and zones (SIGHUP to our pid)."""
        self.signal(signal.SIGHUP)

    def signal(self, sig: int) -> None:
        if not self.is_running() or self.proc is None:
            raise RuntimeError(f"{self.name} is not running{self._exit_note()}")
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to *timeout*, then SIGKILL. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=timeout)
            return proc.returncode
        finally:
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None
            if self.workdir is not None:
                with contextlib.suppress(FileNotFoundError):
                    (self.workdir / PID_FILE_NAME).unlink()

    def kill(self) -> None:
        """SIGKILL at once (a crash, for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def __enter__(self) -> NamedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- logs --------------------------------------------------------------

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_offset(self) -> int:
        """Current length of the log text; pass as ``since`` to :meth:`wait_for_log`."""
        return len(self.log_text())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float = 10.0, *, since: int = 0
    ) -> re.Match[str]:
        """Poll the log until *pattern* (a regex) matches text after offset *since*."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), since)
            if m:
                return m
            if not self.is_running():
                raise NamedStartError(
                    f"{self.name} exited{self._exit_note()} before logging {rx.pattern!r}\n"
                    + self.log_tail()
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name}: no log line matching {rx.pattern!r} within {timeout:.1f}s\n"
                    + self.log_tail()
                )
            time.sleep(0.05)

    # -- readiness ---------------------------------------------------------

    def wait_ready(
        self,
        endpoint: HostPort | tuple[str, int],
        zones: Iterable[str] = (),
        timeout: float = 10.0,
        *,
        authoritative: bool = True,
    ) -> None:
        """Poll until named answers, or raise :class:`NamedStartError` with the log tail.

        With *zones* and ``authoritative=True`` (the default) every zone must
        answer SOA with NOERROR and the AA bit (a secondary is ready only once
        it has transferred). With ``authoritative=False`` any DNS answer to a
        zone counts. Without zones a TCP connect to the port is enough.
        """
        host, port = endpoint if isinstance(endpoint, tuple) else (endpoint.host, endpoint.port)
        pending: Sequence[str] = list(zones)
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if not self.is_running():
                raise NamedStartError(
                    f"{self.name} exited{self._exit_note()} while starting\n{self.log_tail()}"
                )
            if not pending:
                if tcp_open(host, port, timeout=0.3):
                    return
                last = f"TCP {host}#{port} not accepting"
            else:
                still = []
                for zone in pending:
                    st = soa_status(host, port, zone, timeout=0.3)
                    if st is None:
                        still.append(zone)
                        last = f"{zone}: no answer from {host}#{port}"
                    elif authoritative and (st[0] != 0 or not st[1]):
                        still.append(zone)
                        last = f"{zone}: rcode {st[0]}, aa={st[1]}"
                pending = still
                if not pending:
                    return
            if time.monotonic() >= deadline:
                raise NamedStartError(
                    f"{self.name} at {host}#{port} not ready within {timeout:.1f}s ({last})\n"
                    + self.log_tail()
                )
            time.sleep(0.05)

    def _exit_note(self) -> str:
        rc = self.returncode()
        return f" (exit code {rc})" if rc is not None else ""
