"""A forward proxy on loopback that connects only where the SSRF guard allows.

yt-dlp is told to use it for every request, so the guard sees every request yt-dlp makes itself —
the first URL, each redirect (a new request through the proxy), manifests and fragments — and not
only the URL we handed in. The proxy resolves the name, checks every address and connects to a
checked address itself, so a name that re-resolves to a private address later (DNS rebinding) gains
nothing. HTTPS goes through CONNECT: TLS stays end to end and the proxy sees only host and port.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import socketserver
import threading
from urllib.parse import urlsplit

from deepwatch.media.errors import MediaError
from deepwatch.media.guard import AddressPolicy, checked_addresses

MAX_HEAD_BYTES = 64 * 1024
HOP_BY_HOP = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive"}


class GuardProxy:
    """One proxy per fetch: its ``refusals`` explain a failed fetch in terms of the guard."""

    def __init__(self, policy: AddressPolicy, timeout_s: float = 30.0) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.refusals: list[str] = []
        self.requests = 0
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "proxy not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> GuardProxy:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="guard-proxy", daemon=True).start()
        self._server = server
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and cut open tunnels (this also ends a fetch that has run too long)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- one client connection ----------------------------------------------------------------

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(self.timeout_s)
        head = _read_head(client)
        if head is None:
            return
        head_bytes, rest = head
        request_line, _, header_block = head_bytes.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ", 2)
        except ValueError:
            _reply(client, 400, "bad request line")
            return
        self.requests += 1
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            port = int(port_text) if port_text.isdigit() else 443
            upstream = self._connect(client, host.strip("[]"), port)
            if upstream is None:
                return
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
        else:
            parts = urlsplit(target)
            if parts.scheme != "http" or not parts.hostname:
                _reply(client, 400, "only absolute http:// URLs and CONNECT are proxied")
                return
            upstream = self._connect(client, parts.hostname, parts.port or 80)
            if upstream is None:
                return
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            headers = [
                line for line in header_block.split(b"\r\n")
                if line and line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP
            ]
            # one request per connection: the next one (a redirect, say) is checked afresh
            upstream.sendall(
                f"{method} {path} {version}\r\n".encode("latin-1") + b"\r\n".join([*headers, b"Connection: close"])
                + b"\r\n\r\n" + rest
            )
        with contextlib.closing(upstream):
            _relay(client, upstream, self.timeout_s)

    def _connect(self, client: socket.socket, host: str, port: int) -> socket.socket | None:
        try:
            addresses = checked_addresses(host, port, self.policy)
        except MediaError as exc:
            self.refusals.append(str(exc))
            _reply(client, 403, str(exc))
            return None
        for ip in addresses:
            try:
                return socket.create_connection((str(ip), port), timeout=self.timeout_s)
            except OSError:
                continue
        _reply(client, 502, f"cannot connect to {host}:{port}")
        return None


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            _reply(sock, 431, "request head too large")
            return None
        try:
            chunk = sock.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _reply(sock: socket.socket, status: int, message: str) -> None:
    body = message.encode("utf-8", errors="replace")
    reason = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large", 502: "Bad Gateway"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        sock.sendall(head.encode("latin-1") + body)


def _relay(a: socket.socket, b: socket.socket, idle_timeout_s: float) -> None:
    """Copy bytes both ways until either side closes or nothing moves for ``idle_timeout_s``."""
    selector = selectors.DefaultSelector()
    selector.register(a, selectors.EVENT_READ, b)
    selector.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            events = selector.select(idle_timeout_s)
            if not events:
                return
            for key, _ in events:
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    chunk = source.recv(262144)
                except OSError:
                    return
                if not chunk:
                    return
                try:
                    key.data.sendall(chunk)
                except OSError:
                    return
    finally:
        selector.close()
