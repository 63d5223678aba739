"""Servers that misbehave below the API, on loopback, for ``tests/test_network_errors.py``.

The fake cloud speaks correct HTTP over correct TLS; these do not. Each ``HostileServer`` accepts
connections on 127.0.0.1 and hands each one, with its index (0 for the first), to a behaviour:
TLS-level ones work on the raw bytes (an alert, an EOF or a reset instead of the server's side of
the handshake, a plain HTTP answer to a ClientHello); HTTP-level ones run over real TLS with the
fake cloud's certificate (so the tests' ``REQUESTS_CA_BUNDLE`` trusts them) and answer every request
with the documentation's ShowStatistics example, after whatever they add before it (``103 Early
Hints``, ``100 Continue``) or instead of it (a connection cut in the middle of the headers).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from typing import Callable

import fakecloud

# The documentation's example answer: 2026-05-08 .. 2026-05-21, Asia/Shanghai, Preset Service.
SEED_BODY = (b'{"total_request_count": 67188, "total_error_count": 8002, "total_token": 2482084.98, '
             b'"total_prompt_token": 2456504.362, "total_completion_token": 24872.928, '
             b'"total_completion_tasks": 0, "total_infer_count": 0}')
# A fatal TLS alert record (TLS 1.2 framing): handshake_failure (40).
HANDSHAKE_FAILURE_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"

Behaviour = Callable[[socket.socket, int], None]


class HostileServer:
    """A loopback server running ``behaviour(connection, index)`` for each connection, in a thread.
    ``tls`` wraps the connection in real TLS first (for HTTP-level misbehaviour)."""

    def __init__(self, behaviour: Behaviour, tls: bool = False) -> None:
        self.behaviour = behaviour
        self.connections = 0  # accepted so far: with one request per connection, the attempts
        self._context: ssl.SSLContext | None = None
        if tls:
            _, cert = fakecloud._tls_material()
            self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(self._context)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(32)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._listener, socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index, self.connections = self.connections, self.connections + 1
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        try:
            conn.settimeout(10)
            if self._context is not None:
                conn = self._context.wrap_socket(conn, server_side=True)
            self.behaviour(conn, index)
        except OSError:
            pass  # the client gave up: nothing to answer
        finally:
            with contextlib.suppress(OSError):
                conn.close()


# -- TLS-level behaviours: the raw bytes of the server's side of the handshake ----------------------

def client_hello(conn: socket.socket) -> bytes:
    return conn.recv(4096)


def alert(conn: socket.socket, index: int) -> None:
    client_hello(conn)
    conn.sendall(HANDSHAKE_FAILURE_ALERT)


def eof_in_handshake(conn: socket.socket, index: int) -> None:
    client_hello(conn)


def reset_in_handshake(conn: socket.socket, index: int) -> None:
    client_hello(conn)
    reset(conn)


def plain_http(conn: socket.socket, index: int) -> None:
    """What an HTTP server on the port answers to a ClientHello."""
    client_hello(conn)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# -- HTTP-level behaviours, over TLS -------------------------------------------------------------------

def read_request(conn: socket.socket) -> bytes:
    """One request, headers and body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n" + body


def answer(conn: socket.socket, before: bytes = b"") -> None:
    """The example answer with status 200, after ``before`` (interim answers)."""
    read_request(conn)
    conn.sendall(before + b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(SEED_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + SEED_BODY)


def interim_then_answer(interim: bytes) -> Behaviour:
    return lambda conn, index: answer(conn, interim)


def cut_then_answer(cut: bytes, cuts: int = 1) -> Behaviour:
    """The first ``cuts`` connections get ``cut`` (a partial status line or header block) and
    are closed; later ones get the answer."""
    def behaviour(conn: socket.socket, index: int) -> None:
        if index >= cuts:
            answer(conn)
            return
        read_request(conn)
        conn.sendall(cut)
    return behaviour


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CUT_IN_HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Le"
CUT_IN_STATUS_LINE = b"HTTP/1.1 20"
CUT_AFTER_STATUS_LINE = b"HTTP/1.1 200 OK"
