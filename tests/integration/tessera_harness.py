"""Shared helpers for Tessera's HTTP integration tests (python3 stdlib only).

Each test file starts one or more `tessera serve` processes on 127.0.0.1:0, talks to them
over raw sockets (or curl / openssl), records each check by name (the SECURITY.md row id
where one applies) and ends with a line "N passed, M failed" and a non-zero exit on failure.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

# A sanitizer build starts slowly; the listening line should still come well within this.
START_TIMEOUT_S = 30.0
# Default per-socket read timeout: generous for a sanitizer build, short enough that a
# hung server is noticed long before ctest's limit.
SOCK_TIMEOUT_S = 5.0
# Sanitizer reports the server may print on stderr; any of them fails the file. So does a
# statement Postgres refused to prepare for its text (SQLSTATE class 42: syntax, an unknown
# column): the server answers 500 or worse wherever it is used, and a test may not look there.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "AddressSanitizer:", '"msg":"postgres prepare failed","sqlstate":"42')

BASE_ENV = {
    "TESSERA_LISTEN": "127.0.0.1:0",
    "TESSERA_SHARDS": "2",
    "TESSERA_ACCESS_LOG": "off",
    "TESSERA_LOG_LEVEL": "info",
    "TESSERA_HEADER_TIMEOUT_MS": "10000",
    "TESSERA_BODY_TIMEOUT_MS": "30000",
    "TESSERA_IDLE_TIMEOUT_MS": "60000",
    "TESSERA_SHUTDOWN_TIMEOUT_MS": "10000",
    "TESSERA_MAX_HEAD_BYTES": "8192",
    "TESSERA_MAX_BODY_BYTES": "65536",
    "TESSERA_MAX_HEADER_FIELDS": "64",
}


def tessera_bin():
    path = os.environ.get("TESSERA_BIN")
    if not path:
        src = os.environ.get("TESSERA_SOURCE_DIR",
                             os.path.dirname(os.path.dirname(os.path.dirname(
                                 os.path.abspath(__file__)))))
        path = os.path.join(src, "build", "tessera")
    if not os.access(path, os.X_OK):
        print("TESSERA_BIN not executable: %r" % path)
        sys.exit(2)
    return path


# ---------------------------------------------------------------------------- results

class Results:
    """Named checks; prints each and the final "N passed, M failed" line."""

    def __init__(self, title):
        self.passed = 0
        self.failed = 0
        self.failures = []
        print("== %s (binary %s)" % (title, tessera_bin()), flush=True)

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print("PASS %s" % name, flush=True)
        else:
            self.failed += 1
            self.failures.append(name)
            print("FAIL %s%s" % (name, (": " + detail) if detail else ""), flush=True)
        return bool(cond)

    def run(self, name, fn, *args):
        """Runs fn(*args); an exception counts as one failure named `name`."""
        try:
            fn(*args)
        except Exception as exc:  # the test itself broke: count it, keep going
            self.check(name, False, "exception %s: %s" % (type(exc).__name__, exc))

    def finish(self):
        if self.failures:
            print("failed checks: " + ", ".join(self.failures))
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed or not self.passed else 0)


# ---------------------------------------------------------------------------- server

class Server:
    """One `tessera serve` child; stderr is drained in a thread for the whole run."""

    def __init__(self, **env):
        self.env = dict(os.environ)
        self.env.update(BASE_ENV)
        for key, val in env.items():
            self.env[key] = str(val)
        self.proc = None
        self.port = None
        self.lines = []
        self.lock = threading.Lock()
        self.listening = threading.Event()
        self.returncode = None

    def start(self):
        self.proc = subprocess.Popen([tessera_bin(), "serve"], env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        threading.Thread(target=self._drain, daemon=True).start()
        if not self.listening.wait(START_TIMEOUT_S):
            self.kill()
            raise RuntimeError("server did not log 'listening': %s" % self.stderr_text()[-2000:])
        return self

    def _drain(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.lines.append(line)
            if self.port is None and '"msg":"listening"' in line:
                m = re.search(r'"port":(\d+)', line)
                if m:
                    self.port = int(m.group(1))
                    self.listening.set()

    def stderr_text(self):
        with self.lock:
            return "\n".join(self.lines)

    def sanitizer_report(self):
        text = self.stderr_text()
        for marker in SANITIZER_MARKERS:
            idx = text.find(marker)
            if idx >= 0:
                return text[max(0, idx - 200):idx + 1500]
        return ""

    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20.0):
        """SIGTERM, wait; SIGKILL if it does not exit. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        time.sleep(0.05)  # let the drain thread take the last lines
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
        return False


def check_clean_exit(res, srv, name="server exits 0 on SIGTERM, no sanitizer report"):
    rc = srv.stop()
    report = srv.sanitizer_report()
    res.check(name, rc == 0 and not report,
              "exit code %r%s" % (rc, ("; sanitizer:\n" + report) if report else ""))


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


# ---------------------------------------------------------------------------- raw HTTP

def connect(port, timeout=SOCK_TIMEOUT_S, host="127.0.0.1"):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lowercase name, value)
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        name = name.lower()
        for key, val in self.headers:
            if key == name:
                return val
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k == name.lower()]

    def closes(self):
        conn = self.header("connection")
        return conn is not None and conn.lower() == "close"

    def __repr__(self):
        return "<%d %s %r>" % (self.status, self.reason, self.body[:120])


class Reader:
    """Buffered reader of responses from a socket (or an ssl socket)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False
        self.reset = False

    def _fill(self):
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_response(self, head_only=False):
        """One response; None at EOF before any byte. Raises socket.timeout on a stall."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                if self.buf:
                    raise RuntimeError("EOF inside a response head: %r" % self.buf[:200])
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.1"):
            raise RuntimeError("bad status line %r" % lines[0])
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        resp = Response(status, reason, headers, b"", head)
        if head_only or status in (100, 204, 304) or 100 <= status < 200:
            return resp
        length = int(resp.header("content-length") or "0")
        while len(self.buf) < length:
            if not self._fill():
                raise RuntimeError("EOF inside a body (%d of %d)" % (len(self.buf), length))
        resp.body, self.buf = self.buf[:length], self.buf[length:]
        return resp

    def read_final(self, head_only=False):
        """Skips interim 1xx responses; returns (final response, list of interim statuses)."""
        interim = []
        while True:
            resp = self.read_response(head_only)
            if resp is None or resp.status >= 200:
                return resp, interim
            interim.append(resp.status)

    def closed_within(self, seconds):
        """True when the peer closes (EOF or reset) within `seconds` with no further bytes
        other than what is already buffered. Returns (closed, extra_bytes)."""
        deadline = time.monotonic() + seconds
        extra = b""
        old = self.sock.gettimeout()
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    return False, extra
                except ConnectionResetError:
                    return True, extra
                if not data:
                    return True, extra
                extra += data
            return False, extra
        finally:
            self.sock.settimeout(old)


def exchange(port, raw, timeout=SOCK_TIMEOUT_S, head_only=False):
    """Sends raw bytes on a new connection; returns (first final response, reader, sock)."""
    sock = connect(port, timeout)
    sock.sendall(raw)
    reader = Reader(sock)
    resp, _ = reader.read_final(head_only)
    return resp, reader, sock


def get(path, host="localhost", extra=""):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)).encode("latin-1")


def wait_closed(sock, seconds):
    """Measures how long until the peer closes; returns elapsed seconds or None."""
    start = time.monotonic()
    reader = Reader(sock)
    closed, _ = reader.closed_within(seconds)
    return (time.monotonic() - start) if closed else None


def run_cmd(args, timeout=30, **kw):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, **kw)


# ---------------------------------------------------------------------------- /metrics

SETTLE_S = 20.0  # a statement's budget (2 s) and a loaded sanitizer build, with room to spare


def metrics_text(port):
    resp, _, sock = exchange(port, get("/metrics", extra="Connection: close\r\n"))
    sock.close()
    return resp.body.decode() if resp is not None and resp.status == 200 else ""


def metric(port, name):
    """The value of one series of /metrics, unlabelled or named with its labels, or None."""
    for line in metrics_text(port).splitlines():
        if line.startswith(name + " "):
            return float(line[len(name) + 1:])
    return None


def metric_sum(port, family):
    """The sum of every series of a family (by shard, by outcome, ...)."""
    return sum(float(v) for v in re.findall(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(family),
                                           metrics_text(port), re.M))


def metric_zero(port, name, timeout=SETTLE_S):
    """Waits until a gauge of /metrics reads 0; True when that happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(port, name) == 0:
            return True
        time.sleep(0.02)
    return False


def login_failures_settled(port, timeout=SETTLE_S):
    """Waits until every refused login's failure statement was answered (a refusal is answered
    before its count commits, auth/login_failure.c); True when that happened."""
    return metric_zero(port, "tessera_login_failures_pending", timeout)


# ---------------------------------------------------------------------------- clocks

FAKETIME_LIB_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"  # Debian's faketime package


def faketime_env(**spec):
    """A server's environment for a wall clock libfaketime sets (FAKETIME="-600", or
    FAKETIME_TIMESTAMP_FILE=path to step it while it runs), the monotonic clock left alone."""
    import glob
    libs = glob.glob(FAKETIME_LIB_GLOB)
    if not libs:
        raise RuntimeError("libfaketime is missing (Debian package faketime, installed by tests/run)")
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = dict(LD_PRELOAD=libs[0], FAKETIME_DONT_FAKE_MONOTONIC=1,
               ASAN_OPTIONS=(asan + ":" if asan else "") + "verify_asan_link_order=0")
    env.update(spec)
    return env
