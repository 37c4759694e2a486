#!/usr/bin/env python3
"""Parked requests (proto/http_server.h: http_park / http_resume) through the serving binary.

A sign-up parks (Postgres, then Argon2id on the worker pool, then Postgres again); the
checks send it with other requests behind it and prove:
- pipelining keeps order: [sign-up, /health/live, JWKS, sign-up(409), /health/live] in one
  write come back as 201, 200, 200, 409, 200, in that order, each with its own X-Request-Id;
- a client that closes while its request is parked costs nothing: the server stays up, no
  sanitizer report, and the parked work still commits (the user exists);
- HEAD on a parked route: headers and no body;
- SIGTERM while a request is parked: the answer is still written, then the server exits 0
  (SECURITY F16);
- a request parked past the idle deadline (the backstop of a wait without its own budget: here
  a worker queue of slow hashes) is answered 503 with Retry-After and the connection closed,
  never dropped silently; the server stays up and exits clean.
Needs TESSERA_TEST_PG_URL (tests/run exports it); skips otherwise.
"""
import json
import os
import socket
import subprocess
import time
import urllib.parse
import uuid

from tessera_harness import Reader, Results, Server, check_clean_exit, connect, tessera_bin

SIGNUP_PATH = "/t/parked/api/v1/register"


def psql(url, sql):
    r = subprocess.run(["psql", url, "-X", "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode())
    return r.stdout.decode().strip()


def signup_request(name, extra=""):
    body = json.dumps({"username": name, "password": "correct horse battery"})
    return ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n%s"
            "Content-Length: %d\r\n\r\n%s" % (SIGNUP_PATH, extra, len(body), body)).encode()


def get_request(path, method="GET"):
    return ("%s %s HTTP/1.1\r\nHost: t\r\n\r\n" % (method, path)).encode()


def wait_ready(srv, seconds=20.0):
    """Every shard's Postgres connection is up (requests before that are 503 by design)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ok = 0
        for _ in range(6):
            sock = connect(srv.port)
            reader = Reader(sock)
            sock.sendall(get_request("/health/ready"))
            ok += reader.read_response().status == 200
            sock.close()
        if ok == 6:
            return True
        time.sleep(0.1)
    return False


def test_pipelined_order(res, srv):
    sock = connect(srv.port)
    reader = Reader(sock)
    sock.sendall(signup_request("alice") + get_request("/health/live") + get_request("/t/parked/jwks.json") +
                 signup_request("ALICE") + get_request("/health/live"))
    statuses, ids = [], []
    for _ in range(5):
        resp = reader.read_response()
        statuses.append(resp.status)
        ids.append(resp.header("X-Request-Id"))
    sock.close()
    res.check("pipelined behind parked requests: answers in order (201, 200, 200, 409, 200)",
              statuses == [201, 200, 200, 409, 200], repr(statuses))
    res.check("each answer has its own X-Request-Id", len(set(ids)) == 5 and all(ids), repr(ids))


def test_client_gone(res, srv, url):
    for i in range(20):
        sock = connect(srv.port)
        sock.sendall(signup_request("gone%d" % i))
        sock.close()  # while the request is parked
    time.sleep(1.5)
    sock = connect(srv.port)
    reader = Reader(sock)
    sock.sendall(get_request("/health/live"))
    resp = reader.read_response()
    sock.close()
    res.check("clients that left while parked: the server still answers", resp.status == 200)
    stored = int(psql(url, "SELECT count(*) FROM users WHERE username LIKE 'gone%'"))
    res.check("... and their sign-ups still committed (the work was not abandoned half-way)", stored == 20,
              "%d of 20" % stored)


def test_head(res, srv):
    sock = connect(srv.port)
    reader = Reader(sock)
    sock.sendall(get_request("/t/parked/jwks.json", "HEAD") + get_request("/health/live"))
    head = reader.read_response(head_only=True)
    after = reader.read_response()
    sock.close()
    res.check("HEAD on a parked route: 200 with Content-Length and no body, next answer intact",
              head.status == 200 and int(head.header("Content-Length") or 0) > 0 and after.status == 200,
              "%r %r" % (head, after))


def test_sigterm_while_parked(res, url):
    srv = Server(TESSERA_PG_URL=url, TESSERA_ARGON2_M_KIB=65536, TESSERA_ARGON2_T=3).start()
    try:
        res.check("ready", wait_ready(srv))
        sock = connect(srv.port, timeout=20)
        reader = Reader(sock)
        sock.sendall(signup_request("late"))
        time.sleep(0.05)  # the request is parked: hashing 64 MiB x 3 takes far longer
        srv.proc.send_signal(15)
        resp = reader.read_response()
        sock.close()
        res.check("F16: SIGTERM while parked: the answer is still written (201)", resp.status == 201, repr(resp))
        check_clean_exit(res, srv, "F16: then the server exits 0 with no sanitizer report")
    finally:
        srv.kill()


PAST_IDLE_MS = 300        # the server's idle deadline in this check
PAST_IDLE_SIGNUPS = 4     # at once, on one worker: the later ones wait seconds in its queue


def test_parked_past_idle(res, url):
    srv = Server(TESSERA_PG_URL=url, TESSERA_ARGON2_M_KIB=65536, TESSERA_ARGON2_T=3, TESSERA_WORKERS=1,
                 TESSERA_IDLE_TIMEOUT_MS=PAST_IDLE_MS).start()
    try:
        res.check("ready", wait_ready(srv))
        socks = [connect(srv.port, timeout=30) for _ in range(PAST_IDLE_SIGNUPS)]
        for i, sock in enumerate(socks):
            sock.sendall(signup_request("idle%d" % i))
        answers = []
        for sock in socks:
            resp = Reader(sock).read_response()
            answers.append((resp.status, resp.header("Retry-After"), resp.header("Connection"),
                            sock.recv(1) if resp.status == 503 else None))
            sock.close()
        late = [a for a in answers if a[0] == 503]
        res.check("a request parked past the idle deadline: 503 with Retry-After, Connection: close, "
                  "then the connection closes", late and all(a[1] == "1" and (a[2] or "").lower() == "close"
                                                            and a[3] == b"" for a in late), repr(answers))
        res.check("... every other sign-up answered 201", all(a[0] in (201, 503) for a in answers), repr(answers))
        sock = connect(srv.port)
        reader = Reader(sock)
        sock.sendall(get_request("/health/live"))
        res.check("... and the server still answers", reader.read_response().status == 200)
        sock.close()
        time.sleep(PAST_IDLE_SIGNUPS * 1.0)  # the queued hashes run out; their answers find nobody
        check_clean_exit(res, srv, "past the idle deadline: the server exits 0 with no sanitizer report")
    finally:
        srv.kill()


def main():
    res = Results("parked requests")
    base = os.environ.get("TESSERA_TEST_PG_URL")
    if not base:
        print("SKIP: TESSERA_TEST_PG_URL is not set")
        raise SystemExit(77)
    name = "parked_" + uuid.uuid4().hex[:12]
    psql(base, "CREATE DATABASE %s" % name)
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(base)._replace(path="/" + name))
    try:
        env = dict(os.environ, TESSERA_PG_URL=url)
        for args in (["migrate"], ["admin", "tenant", "create", "parked"]):
            subprocess.run([tessera_bin()] + args, env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)
        psql(url, "UPDATE tenants SET settings = '{\"registration\": \"open\"}' WHERE slug = 'parked'")
        srv = Server(TESSERA_PG_URL=url, TESSERA_ARGON2_M_KIB=256, TESSERA_ARGON2_T=1).start()
        try:
            res.check("ready", wait_ready(srv))
            res.run("pipelined order", test_pipelined_order, res, srv)
            res.run("client gone while parked", test_client_gone, res, srv, url)
            res.run("HEAD", test_head, res, srv)
            check_clean_exit(res, srv)
        finally:
            srv.kill()
        res.run("SIGTERM while parked", test_sigterm_while_parked, res, url)
        res.run("parked past the idle deadline", test_parked_past_idle, res, url)
    finally:
        psql(base, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
    res.finish()


if __name__ == "__main__":
    main()
