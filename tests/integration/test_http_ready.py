#!/usr/bin/env python3
"""Readiness follows the dependencies, and serve refuses an old schema (issue 4).

- With TESSERA_REDIS_URL: /health/ready is 200 "ready" with checks.redis "up" once each
  shard's Redis client is connected; Redis killed: within a few seconds 200 "degraded" with
  redis "down" on every shard (SECURITY F06: Redis carries the revocation fan-out, which falls
  back to polling Postgres; every instance shares it, so it must not take them all out of a
  load balancer); Redis back: "ready" again, reconnected by itself.
- With TESSERA_PG_URL (needs TESSERA_TEST_PG_URL from tests/run, else those checks skip):
  an unmigrated database: serve exits 1 and names `tessera migrate`; with
  TESSERA_AUTO_MIGRATE=1 it migrates and serves; an unreachable database: exit 1.
"""
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid

from tessera_harness import Results, Server, check_clean_exit, exchange, get, tessera_bin

POLL_S = 15.0  # reconnect backoff is at most 5 s: generous, and the poll ends early


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port, workdir):
    return subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", workdir,
                             "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ready_states(port, tries=8):
    """Asks /health/ready on several fresh connections (they spread over the shards)."""
    states = []
    for _ in range(tries):
        resp, _, sock = exchange(port, get("/health/ready", extra="Connection: close\r\n"))
        sock.close()
        states.append((resp.status, json.loads(resp.body), resp.header("Retry-After")))
    return states


def wait_for(port, want_status, want_state, shards_ready):
    deadline = time.monotonic() + POLL_S
    states = []
    while time.monotonic() < deadline:
        states = ready_states(port)
        if all(status == want_status and body.get("status") == want_state and
               body.get("shards_ready") == shards_ready for status, body, _ in states):
            return states
        time.sleep(0.2)
    return states


def test_redis_readiness(res):
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        redis = start_redis(port, workdir)
        srv = Server(TESSERA_SHARDS=2, TESSERA_REDIS_URL="redis://127.0.0.1:%d" % port)
        try:
            srv.start()
            states = wait_for(srv.port, 200, "ready", 2)
            res.check("ready 200 with redis up on every shard",
                      states and all(s == 200 and b["checks"].get("redis") == "up" for s, b, _ in states),
                      repr(states[:2]))
            redis.kill()
            redis.wait()
            states = wait_for(srv.port, 200, "degraded", 0)
            res.check("F06: Redis down: ready 200 \"degraded\", redis down, on every shard",
                      states and all(s == 200 and b["status"] == "degraded" and
                                     b["checks"].get("redis") == "down" and b["shards_ready"] == 0
                                     for s, b, ra in states), repr(states[:2]))
            resp, _, sock = exchange(srv.port, get("/health/live", extra="Connection: close\r\n"))
            sock.close()
            res.check("Redis down: liveness stays 200", resp.status == 200)
            redis = start_redis(port, workdir)
            states = wait_for(srv.port, 200, "ready", 2)
            res.check("Redis back: ready 200 again, reconnected by itself",
                      states and all(s == 200 and b["status"] == "ready" and b["shards_ready"] == 2
                                     for s, b, _ in states), repr(states[:2]))
            check_clean_exit(res, srv)
        finally:
            srv.kill()
            redis.kill()
            redis.wait()


def psql(url, sql):
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)


def serve_once(env, seconds=8):
    """Runs serve until it exits or logs 'listening'; returns (exit code or None, stderr)."""
    full = dict(os.environ, TESSERA_LISTEN="127.0.0.1:0", TESSERA_SHARDS="1", **env)
    proc = subprocess.Popen([tessera_bin(), "serve"], env=full, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=seconds)
        return proc.returncode, err.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
        return None if proc.returncode == 0 else proc.returncode, err.decode("utf-8", "replace")


def test_schema_gate(res):
    base = os.environ.get("TESSERA_TEST_PG_URL")
    if not base:
        print("SKIP schema checks: TESSERA_TEST_PG_URL is not set")
        return
    name = "ready_" + uuid.uuid4().hex[:12]
    created = psql(base, "CREATE DATABASE %s" % name)
    res.check("a fresh database for the schema checks", created.returncode == 0,
              created.stderr.decode())
    parts = urllib.parse.urlsplit(base)
    url = urllib.parse.urlunsplit(parts._replace(path="/" + name))
    try:
        code, err = serve_once({"TESSERA_PG_URL": url}, seconds=8)
        res.check("unmigrated database: serve exits 1 and names tessera migrate",
                  code == 1 and "tessera migrate" in err, "exit %r: %s" % (code, err[-400:]))
        res.check("the database URL's password is not printed",
                  (parts.password or "\0") not in err)
        code, err = serve_once({"TESSERA_PG_URL": url, "TESSERA_AUTO_MIGRATE": "1"}, seconds=8)
        res.check("TESSERA_AUTO_MIGRATE=1: migrates, serves, exits 0 on SIGTERM",
                  code is None and '"msg":"listening"' in err, "exit %r: %s" % (code, err[-400:]))
        version = psql(url, "SELECT max(version) FROM schema_migrations")
        res.check("the migrations were recorded", version.returncode == 0 and
                  int(version.stdout.decode().strip() or 0) >= 1)
        code, err = serve_once({"TESSERA_PG_URL": "postgresql://x:y@127.0.0.1:1/none"}, seconds=8)
        res.check("unreachable database: serve exits 1", code == 1, "exit %r" % code)
    finally:
        psql(base, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)


def main():
    res = Results("readiness and the schema gate")
    res.run("redis readiness", test_redis_readiness, res)
    res.run("schema gate", test_schema_gate, res)
    res.finish()


if __name__ == "__main__":
    main()
