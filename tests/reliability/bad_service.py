"""A misbehaving model service for the fault suite: a raw-socket HTTP server that answers
`POST /generate` according to the request's `text`:

  "500"        answers 500 with the error envelope
  "drop"       reads the request and closes the connection without answering
  "hang"       reads the request and never answers; records when the client closes the connection
  "flaky-<n>"  answers 500 to the first n requests with that text, then a valid empty result
  "slow-<s>"   answers a valid empty result after s seconds (a long generation)

Raw sockets (not a framework) so that "hang" and "drop" are exactly that, and so the server sees
when a client gives up on a connection.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter


class BadService:
    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.requests: Counter[str] = Counter()
        self.hung_open = 0  # "hang" connections the client has not closed yet
        self.hung_closed: list[float] = []  # when each client gave up on a hanging request
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BadService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> dict[str, object]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return {}
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return json.loads(body or b"{}")

    @staticmethod
    def _answer(conn: socket.socket, status: int, body: dict[str, object]) -> None:
        raw = json.dumps(body).encode()
        reason = {200: "OK", 500: "Internal Server Error"}[status]
        conn.sendall(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode()
            + raw
        )

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = self._read_request(conn)
            text = str(request.get("text", ""))
            with self._lock:
                self.requests[text] += 1
                seen = self.requests[text]
            if text == "500" or (text.startswith("flaky-") and seen <= int(text.split("-")[1])):
                self._answer(conn, 500, {"error": {"code": "internal", "message": "model exploded"}})
            elif text == "drop":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            elif text == "hang":
                self._hang(conn)
            elif text.startswith("slow-"):
                time.sleep(float(text.split("-")[1]))
                self._answer(conn, 200, {"artifacts": [], "output": {"answered": text}})
            else:
                self._answer(conn, 200, {"artifacts": [], "output": {"answered": text}})

    def _hang(self, conn: socket.socket) -> None:
        with self._lock:
            self.hung_open += 1
        conn.settimeout(0.2)
        try:
            while not self._stop.is_set():
                try:
                    if conn.recv(1) == b"":
                        break  # the client closed its end
                except TimeoutError:
                    continue
                except OSError:
                    break
        finally:
            with self._lock:
                self.hung_open -= 1
                if not self._stop.is_set():
                    self.hung_closed.append(time.monotonic())
