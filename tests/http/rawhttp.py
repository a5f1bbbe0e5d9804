"""A raw HTTP/1.1 client over a blocking socket, for tests that need to misbehave.

httpx cannot abort a body half-way, pipeline requests, send ``CONNECT`` to an origin, trickle
headers byte by byte or time each chunk of a streamed body; this can. It parses just enough
HTTP/1.1 to check what the host answers: status line, headers, ``Content-Length``, chunked
and read-until-close bodies.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def build_request(
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    host: str = "127.0.0.1",
) -> bytes:
    """Request bytes: ``Host`` first, ``Content-Length`` added when a body is given."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class RawConnection:
    """One TCP connection to ``base_url``; ``timeout`` bounds every blocking read."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        assert parts.scheme == "http" and parts.hostname and parts.port, base_url
        self.host = f"{parts.hostname}:{parts.port}"
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.eof = False

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), the rudest way a client can leave."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, target: str, **kwargs: object) -> None:
        self.send(build_request(method, target, host=self.host, **kwargs))  # type: ignore[arg-type]

    def _fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream (or a reset)."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise ConnectionError(f"connection closed with {len(self.buffer)} of {n} bytes read")
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"connection closed before a full line: {self.buffer[:200]!r}")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def read_head(self) -> tuple[int, str, list[tuple[str, str]]]:
        """Status line and headers of the next response (1xx responses are skipped)."""
        while True:
            status_line = self._line().decode("latin-1")
            _version, status, *rest = status_line.split(" ", 2)
            reason = rest[0] if rest else ""
            headers: list[tuple[str, str]] = []
            while line := self._line():
                name, _, value = line.decode("latin-1").partition(":")
                headers.append((name.strip(), value.strip()))
            if not 100 <= int(status) < 200:
                return int(status), reason, headers

    def chunks(self, headers: list[tuple[str, str]]) -> Iterator[tuple[float, bytes]]:
        """The body of a chunked response, one (monotonic arrival time, chunk) per chunk."""
        assert any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers), headers
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line():  # trailers
                    pass
                return
            data = self._take(size)
            arrived = time.monotonic()
            assert self._take(2) == b"\r\n"
            yield arrived, data

    def read_body(self, method: str, status: int, headers: list[tuple[str, str]]) -> bytes:
        names = {k.lower(): v for k, v in headers}
        if method == "HEAD" or status in (204, 304):
            return b""
        if "chunked" in names.get("transfer-encoding", "").lower():
            return b"".join(chunk for _, chunk in self.chunks(headers))
        if "content-length" in names:
            return self._take(int(names["content-length"]))
        while self._fill():  # read until close
            pass
        out, self.buffer = self.buffer, b""
        return out

    def read_response(self, method: str = "GET") -> RawResponse:
        status, reason, headers = self.read_head()
        return RawResponse(status, reason, headers, self.read_body(method, status, headers))

    def closed_within(self, seconds: float) -> bool:
        """Whether the peer closes the connection within ``seconds`` (bytes it sends are kept)."""
        deadline = time.monotonic() + seconds
        saved = self.sock.gettimeout()
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    if not self._fill():
                        return True
                except TimeoutError:
                    return False
            return False
        finally:
            self.sock.settimeout(saved)
