"""Throwaway ``redis-server`` processes for tests and benchmarks.

Each :class:`RedisServer` runs on a free port with persistence off, in its own
temporary directory, and can be killed, paused (SIGSTOP) and restarted on the same
port, which is what failure tests of locks and limiters need. :class:`RedisClusterNodes`
starts several of them with ``--cluster-enabled yes`` and joins them into a real Redis
Cluster (masters only) with ``redis-cli --cluster create``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# A cluster node's bus listens on port + 10000, so a node's port must stay below this.
CLUSTER_BUS_OFFSET = 10_000
MAX_CLUSTER_PORT = 65_535 - CLUSTER_BUS_OFFSET


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: set[int] | None = None) -> int:
    """A port below 55536 whose cluster-bus port (port + 10000) is free as well."""
    taken = taken or set()
    for _ in range(1000):
        port = random.randint(20_000, MAX_CLUSTER_PORT)
        bus = port + CLUSTER_BUS_OFFSET
        if port in taken or bus in taken or not (_bindable(port) and _bindable(bus)):
            continue
        return port
    raise RedisServerError("no free port pair (port, port + 10000) found for a cluster node")


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up."""


class RedisServer:
    """One ``redis-server`` child process bound to 127.0.0.1."""

    def __init__(
        self, port: int | None = None, *, binary: str | None = None, extra_args: tuple[str, ...] = ()
    ):
        found = binary or shutil.which("redis-server")
        if not found:
            raise RedisServerError("redis-server is not on PATH (Debian: apt-get install redis-server)")
        self.binary = found
        self.port = port or free_port()
        self.extra_args = extra_args
        self._dir = tempfile.mkdtemp(prefix="edge-kv-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.running:
            return self
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
            *self.extra_args,
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RedisServerError(f"redis-server on port {self.port} exited: {err.strip()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.02)
        self.kill()
        raise RedisServerError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def kill(self) -> None:
        """Stop at once (SIGKILL): the node vanishes with whatever it held."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGCONT)
                self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def restart(self) -> RedisServer:
        """Kill and start again on the same port, empty (persistence is off)."""
        self.kill()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the node keeps its sockets open but answers nothing."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RedisClusterNodes:
    """A real Redis Cluster of ``masters`` nodes (no replicas), each a :class:`RedisServer`
    child process with ``--cluster-enabled yes``, joined with
    ``redis-cli --cluster create``; ready when every node reports ``cluster_state:ok``.

    ``startup_nodes`` are ``(host, port)`` pairs for ``redis.asyncio.cluster.RedisCluster``.
    :meth:`close` stops every node by its PID (SIGKILL) and removes its directory.
    """

    def __init__(self, masters: int = 3, *, node_timeout_ms: int = 2000) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        cli = shutil.which("redis-cli")
        if not cli:
            raise RedisServerError("redis-cli is not on PATH (Debian: apt-get install redis-tools)")
        self.cli = cli
        taken: set[int] = set()
        ports: list[int] = []
        for _ in range(masters):
            port = free_cluster_port(taken)
            taken.update((port, port + CLUSTER_BUS_OFFSET))
            ports.append(port)
        cluster_args = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
        )
        self.nodes = [RedisServer(port, extra_args=cluster_args) for port in ports]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis://`` URL of the first node (``RedisCluster.from_url`` discovers the rest)."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> RedisClusterNodes:
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            created = subprocess.run(
                [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
            if created.returncode != 0:
                raise RedisServerError(
                    "redis-cli --cluster create failed: "
                    + (created.stdout + created.stderr).decode(errors="replace")[-2000:]
                )
            while not all(self._state_ok(node.port) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RedisServerError(f"cluster not ok within {timeout}s")
                time.sleep(0.05)
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _state_ok(port: int) -> bool:
        """``CLUSTER INFO`` over a raw socket: does this node report ``cluster_state:ok``?"""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"CLUSTER INFO\r\n")
            data = b""
            while b"cluster_slots_assigned" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return b"cluster_state:ok" in data
        return False

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisClusterNodes:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
