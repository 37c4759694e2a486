"""perf/lib/enum_probe.py: the client of perf/login's enumeration run (issue 6, SECURITY P01).

perf/login starts it under `taskset -c LOAD_CPUS` (the load's core, away from the server's) and
writes a JSON object to its stdin:

  {"port": P, "path": "/t/T/api/v1/auth/login",
   "warmup": [[class, body], ...], "requests": [[class, body], ...]}

It sends every request one after another on one keep-alive connection (one in flight: the
worker pool is never queued, so a latency is one login's own cost, not its wait behind
others), the warm-up first and unmeasured, and times each measured request on the client
from just before its first byte is written until the last byte of its answer is read
(time.perf_counter_ns; connecting, when the server closed the connection, happens before the
clock starts). Its stdout is one JSON object:

  {"lat_us": {class: [latency in microseconds, in sending order]},
   "answers": {class: {fingerprint: count}}}

where a fingerprint is the JSON text of [status, [[header, value], ...], body] with the
headers in the server's order, names lowercased, Date and X-Request-Id left out (they differ
on every answer by design). Identical answers across classes = the same single fingerprint.
"""

import json
import socket
import sys
import time

LOOPBACK = "127.0.0.1"      # DESIGN.md §8: benchmarks bind only to loopback
TIMEOUT_S = 30.0            # one login: ~30 ms of Argon2id; a busy box stretches it, not 1000x
RECV_BYTES = 65536
VOLATILE = ("date", "x-request-id")  # differ on every answer, whatever the class


class Conn:
    """One keep-alive HTTP/1.1 connection, one request at a time; reopened when closed."""

    def __init__(self, port):
        self.port, self.sock, self.buf = port, None, b""

    def ensure(self):
        if self.sock is None:
            self.sock = socket.create_connection((LOOPBACK, self.port), timeout=TIMEOUT_S)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""

    def recv(self):
        data = self.sock.recv(RECV_BYTES)
        if not data:
            raise ConnectionError("server closed the connection mid-answer")
        self.buf += data

    def exchange(self, raw):
        """(latency ns, status, [(name, value)], body) of one request already encoded."""
        self.ensure()
        t0 = time.perf_counter_ns()
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self.recv()
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        status_line, *fields = head.decode("latin-1").split("\r\n")
        headers = []
        for f in fields:
            name, _, value = f.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = int(dict(headers).get("content-length", "0"))
        self.buf = rest
        while len(self.buf) < length:
            self.recv()
        t1 = time.perf_counter_ns()
        body, self.buf = self.buf[:length], self.buf[length:]
        if dict(headers).get("connection", "").lower() == "close":
            self.sock.close()
            self.sock = None
        return t1 - t0, int(status_line.split()[1]), headers, body


def encode(path, body):
    data = body.encode()
    return ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (path, len(data))).encode() + data


def fingerprint(status, headers, body):
    kept = [[n, v] for n, v in headers if n not in VOLATILE]
    return json.dumps([status, kept, body.decode("latin-1")])


def main():
    spec = json.load(sys.stdin)
    conn = Conn(spec["port"])
    for _, body in spec["warmup"]:
        conn.exchange(encode(spec["path"], body))
    lat, answers = {}, {}
    for cls, body in spec["requests"]:
        ns, status, headers, data = conn.exchange(encode(spec["path"], body))
        lat.setdefault(cls, []).append(ns / 1e3)
        per = answers.setdefault(cls, {})
        fp = fingerprint(status, headers, data)
        per[fp] = per.get(fp, 0) + 1
    json.dump({"lat_us": lat, "answers": answers}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
