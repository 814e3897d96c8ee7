"""A browser's requests to `gputui serve`, with the standard library only.

The tests run it as another Unix user with Debian's /usr/bin/python3 (that user cannot run the project's
venv), fed on stdin: `python3 - HOST PORT STEPS_JSON`. It prints one JSON result per step. Steps:
  {"op": "get", "path": P, "headers": {...}}                  -> {"status", "headers", "body"}
  {"op": "open", "name": N, "path": P, "headers": {...}}      -> {"status", "body"} (websocket upgrade)
  {"op": "read", "name": N, "until": TEXT, "timeout": S}      -> {"found", "text"} (app output, escapes removed)
  {"op": "key", "name": N, "data": KEYS}                      -> {} (typed into the app, as the page does)
  {"op": "close", "name": N}                                  -> {}
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import struct
import sys
import time

ESCAPES = re.compile(rb"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78DEHM])")


def get(host: str, port: int, path: str, headers: dict) -> dict:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("GET", path, skip_host="Host" in headers)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read().decode("utf-8", "replace")
    conn.close()
    return {"status": r.status, "headers": r.getheaders(), "body": body[:500]}


class WebSocket:
    """A client websocket over a plain socket (RFC 6455): masked frames out, unmasked frames in."""

    def __init__(self, host: str, port: int, path: str, headers: dict):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.output = b""
        lines = [
            f"GET {path} HTTP/1.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        headers = {"Host": f"{host}:{port}", **headers}
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.body = b""
        if self.status != 101:  # an HTTP refusal: read its body (the connection is kept alive)
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            self._need(int(length.group(1)) if length else 0, time.monotonic() + 10)
            self.body = self.buf

    def _need(self, n: int, deadline: float) -> bool:
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            if not chunk:
                raise ConnectionError("the server closed the websocket")
            self.buf += chunk
        return True

    def _frame(self, deadline: float) -> tuple[int, bytes] | None:
        if not self._need(2, deadline):
            return None
        opcode, length = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        start = 2
        if length == 126:
            if not self._need(4, deadline):
                return None
            length, start = struct.unpack(">H", self.buf[2:4])[0], 4
        elif length == 127:
            if not self._need(10, deadline):
                return None
            length, start = struct.unpack(">Q", self.buf[2:10])[0], 10
        if not self._need(start + length, deadline):
            return None
        payload, self.buf = self.buf[start : start + length], self.buf[start + length :]
        return opcode, payload

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode]) + (
            bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        )
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def read_until(self, text: str, timeout: float) -> bool:
        """Collect app output until TEXT shows in it (escape sequences removed), answering pings."""
        deadline = time.monotonic() + timeout
        while text.encode() not in ESCAPES.sub(b"", self.output):
            frame = self._frame(deadline)
            if frame is None:
                return False
            opcode, payload = frame
            if opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x8:
                raise ConnectionError("the server closed the websocket")
            elif opcode == 0x2:  # the app's terminal output (text frames are JSON notes, e.g. open_url)
                self.output += payload
        return True

    def text(self) -> str:
        return ESCAPES.sub(b"", self.output).decode("utf-8", "replace")

    def close(self) -> None:
        try:
            self.send(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


def run(host: str, port: int, steps: list[dict]) -> list[dict]:
    sockets: dict[str, WebSocket] = {}
    results = []
    for step in steps:
        op = step["op"]
        if op == "get":
            results.append(get(host, port, step["path"], step.get("headers", {})))
        elif op == "open":
            ws = WebSocket(host, port, step["path"], step.get("headers", {}))
            if ws.status == 101:
                sockets[step.get("name", "")] = ws
            else:
                ws.sock.close()
            results.append({"status": ws.status, "body": ws.body.decode("utf-8", "replace")[-500:]})
        elif op == "read":
            ws = sockets[step["name"]]
            found = ws.read_until(step["until"], step.get("timeout", 60))
            results.append({"found": found, "text": ws.text()[-3000:]})
        elif op == "key":
            sockets[step["name"]].send(0x1, json.dumps(["stdin", step["data"]]).encode())
            results.append({})
        elif op == "close":
            sockets.pop(step["name"]).close()
            results.append({})
    for ws in sockets.values():
        ws.close()
    return results


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))))
