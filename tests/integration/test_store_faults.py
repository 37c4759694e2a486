#!/usr/bin/env python3
"""The serving binary against Postgres and Redis that fail (issue 4; SECURITY F01, F02, F06).

This test starts its own Postgres cluster (durable: fsync on) and Redis, so it may stop them:
- F01, Postgres stopped under load (`pg_ctl -m immediate`, a crash) and restarted: while it is
  down every sign-up and JWKS read answers 503 with Retry-After within the query budget (none
  hangs), /health/ready says postgres "down"; the shards reconnect by themselves; every sign-up
  answered 201 before, during or after the outage is in the database afterwards.
- A statement past its budget (the users table locked by another session): 503 with
  Retry-After within the budget, the statement is cancelled by the server (statement_timeout)
  so the user does not appear later, and the same server answers 201 once the lock is gone.
- Redis restarted: the instance's subscriber resubscribes by itself; an event published on the
  events channel reaches every shard once before and once after the restart.
Skips when Postgres (initdb) or redis-server is not installed.
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid

from tessera_harness import Results, Server, check_clean_exit, tessera_bin

SHARDS = 2
BUDGET_MS = 1000          # TESSERA_PG_QUERY_TIMEOUT_MS for this test: short, so outages show fast
HANG_SLACK_S = 1.5        # an answer may take the budget plus timer ticks and a loaded sanitizer
LOAD_THREADS = 6
OUTAGE_S = 3.0            # how long Postgres stays down
RECOVER_S = 20.0          # reconnect backoff is capped at 5 s: generous
SOURCE = os.environ.get("TESSERA_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
COMMON = os.path.join(SOURCE, "deploy", "lib", "common.sh")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(script, timeout=120):
    """Runs bash with deploy/lib/common.sh sourced (the same helpers tests/run uses)."""
    return subprocess.run(["bash", "-c", "set -euo pipefail; source '%s'; %s" % (COMMON, script)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


class Postgres:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "pg")
        os.makedirs(self.dir)
        os.chmod(workdir, 0o755)
        os.chmod(self.dir, 0o777)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.password = uuid.uuid4().hex
        self.url = "postgresql://tessera_t:%s@127.0.0.1:%d/tessera_t" % (self.password, self.port)

    def init(self):
        r = sh("tessera_pg_init '%s' '%s/run' 0 && tessera_pg_start '%s' %d '%s/log' && "
               "tessera_pg_create_db '%s' %d tessera_t tessera_t %s"
               % (self.data, self.dir, self.data, self.port, self.dir, self.data, self.port, self.password))
        if r.returncode != 0:
            raise RuntimeError("postgres: " + r.stderr.decode())

    def start(self):
        r = sh("tessera_pg_start '%s' %d '%s/log'" % (self.data, self.port, self.dir))
        if r.returncode != 0:
            raise RuntimeError("postgres start: " + r.stderr.decode())

    def stop(self, mode="immediate"):
        sh("tessera_pg_stop '%s' %s" % (self.data, mode))

    def psql(self, sql):
        r = subprocess.run(["psql", self.url, "-X", "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql: " + r.stderr.decode())
        return r.stdout.decode().strip()


def request(port, method, path, body=None, timeout=10.0):
    """One request on a fresh connection: (status, headers dict, body bytes, seconds)."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, time.monotonic() - t0
    except (OSError, http.client.HTTPException) as e:
        return None, {}, repr(e).encode(), time.monotonic() - t0
    finally:
        conn.close()


def sign_up(port, name):
    return request(port, "POST", "/t/acme/api/v1/register",
                   {"username": name, "password": "correct horse battery"})


def prepare_database(pg):
    env = dict(os.environ, TESSERA_PG_URL=pg.url)
    for args in (["migrate"], ["admin", "tenant", "create", "acme"]):
        r = subprocess.run([tessera_bin()] + args, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("tessera %s: %s" % (" ".join(args), r.stderr.decode()))
    pg.psql("UPDATE tenants SET settings = '{\"registration\": \"open\"}' WHERE slug = 'acme'")


def start_server(pg, **extra):
    return Server(TESSERA_SHARDS=SHARDS, TESSERA_PG_URL=pg.url, TESSERA_PG_QUERY_TIMEOUT_MS=BUDGET_MS,
                  TESSERA_ARGON2_M_KIB=256, TESSERA_ARGON2_T=1, **extra).start()


def ready(port):
    status, _, body, _ = request(port, "GET", "/health/ready", timeout=5)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {}


def wait_ready(port, seconds=RECOVER_S):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(r[0] == 200 and r[1].get("status") == "ready" for r in (ready(port) for _ in range(4))):
            return True
        time.sleep(0.2)
    return False


class Load:
    """Sign-ups (and JWKS reads) from several threads until stopped; every answer recorded."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results = []  # (kind, name, status, retry_after, started, seconds)
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(LOAD_THREADS)]

    def run(self, index):
        n = 0
        while not self.stop.is_set():
            n += 1
            started = time.monotonic()
            if n % 4 == 0:
                kind, name = "jwks", None
                status, headers, _, secs = request(self.port, "GET", "/t/acme/jwks.json")
            else:
                kind, name = "signup", "u%d_%d_%s" % (index, n, uuid.uuid4().hex[:6])
                status, headers, _, secs = sign_up(self.port, name)
            with self.lock:
                self.results.append((kind, name, status, headers.get("retry-after"), started, secs))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def snapshot(self):
        with self.lock:
            return list(self.results)


def test_postgres_restart(res, pg):
    srv = start_server(pg)
    try:
        res.check("ready with postgres up", wait_ready(srv.port))
        with Load(srv.port) as load:
            time.sleep(2.0)
            before = len(load.snapshot())
            used = pg_queries_by_connection(srv.port)
            res.check("concurrent load spreads over every primary connection of a shard "
                      "(TESSERA_PG_CONNECTIONS=%d)" % PG_CONNECTIONS,
                      any(all(used.get((s, c), 0) > 0 for c in range(PG_CONNECTIONS)) for s in range(SHARDS)),
                      repr(used))
            pg.stop("immediate")
            down_at = time.monotonic()
            time.sleep(BUDGET_MS / 1000.0 + 0.5)
            status, body = ready(srv.port)
            res.check("F01: postgres down: /health/ready 503 with postgres \"down\"",
                      status == 503 and body.get("checks", {}).get("postgres") == "down", repr(body))
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            restart_at = time.monotonic()  # Postgres may answer before pg_ctl start returns
            pg.start()
            up_at = time.monotonic()
            recovered = None
            while time.monotonic() - up_at < RECOVER_S:
                if any(r[2] == 201 and r[4] > up_at for r in load.snapshot()):
                    recovered = time.monotonic() - up_at
                    break
                time.sleep(0.1)
            time.sleep(1.0)
        results = load.snapshot()
        res.check("load ran before the outage", before > 10, "%d answers" % before)
        res.check("F01: the shards reconnected by themselves (a 201 after the restart)",
                  recovered is not None, "none within %.0f s" % RECOVER_S)
        bad = [r for r in results if r[2] not in (200, 201, 503)]
        res.check("every answer is 200/201 or 503, none failed or hung", not bad, repr(bad[:5]))
        slow = [r for r in results if r[5] > BUDGET_MS / 1000.0 + HANG_SLACK_S]
        res.check("F01: no request waited past the budget (+%.1f s)" % HANG_SLACK_S, not slow,
                  repr(slow[:5]))
        outage = [r for r in results if r[4] > down_at + 0.2 and r[4] + r[5] < restart_at]
        res.check("F01: during the outage, answers are 503 with Retry-After",
                  outage and all(r[2] == 503 and r[3] for r in outage),
                  "%d answers, those that were not: %r" % (len(outage), [r for r in outage
                                                                         if r[2] != 503 or not r[3]][:5]))
        res.check("F01: JWKS reads also failed fast during the outage",
                  any(r[0] == "jwks" for r in outage))
        acked = [r[1] for r in results if r[0] == "signup" and r[2] == 201]
        stored = set(pg.psql("SELECT username FROM users").split("\n"))
        missing = [n for n in acked if n not in stored]
        res.check("F01/F02: every sign-up answered 201 is in the database (%d)" % len(acked),
                  acked and not missing, repr(missing[:5]))
        audited = int(pg.psql("SELECT count(*) FROM audit_log WHERE action = 'user_registered'"))
        res.check("each stored user has its audit row, written with it",
                  audited == int(pg.psql("SELECT count(*) FROM users")))
        check_clean_exit(res, srv)
    finally:
        srv.kill()


def test_statement_past_budget(res, pg):
    srv = start_server(pg)
    locker = None
    try:
        res.check("ready", wait_ready(srv.port))
        locker = subprocess.Popen(["psql", pg.url, "-X", "-qAt"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        locker.stdin.write("BEGIN;\nLOCK TABLE users IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n")
        locker.stdin.flush()
        res.check("another session holds the users table", locker.stdout.readline().strip() == "locked")
        status, headers, _, secs = sign_up(srv.port, "blocked_user")
        res.check("a statement past its budget: 503 with Retry-After",
                  status == 503 and headers.get("retry-after"), "%r %r" % (status, headers))
        res.check("... answered within the budget (+%.1f s)" % HANG_SLACK_S,
                  secs <= BUDGET_MS / 1000.0 + HANG_SLACK_S, "%.2f s" % secs)
        time.sleep(BUDGET_MS / 1000.0)
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(30)
        status, _, body, _ = sign_up(srv.port, "after_lock")
        res.check("the same server answers 201 once the lock is gone", status == 201, body[:200])
        time.sleep(0.5)
        res.check("the timed-out insert was cancelled by the server, not committed later",
                  pg.psql("SELECT count(*) FROM users WHERE username = 'blocked_user'") == "0")
        check_clean_exit(res, srv)
    finally:
        if locker and locker.poll() is None:
            locker.kill()
        srv.kill()


PG_CONNECTIONS = 2  # core/config.c's default TESSERA_PG_CONNECTIONS
PG_QUERIES = re.compile(r'^tessera_pg_queries_total\{shard="(\d+)",server="primary",conn="(\d+)"\} (\d+)$', re.M)


def pg_queries_by_connection(port):
    """{(shard, connection): queries sent} for the primary connections."""
    _, _, body, _ = request(port, "GET", "/metrics")
    return {(int(s), int(c)): int(v) for s, c, v in PG_QUERIES.findall(body.decode())}


def metric_values(port, name):
    _, _, body, _ = request(port, "GET", "/metrics")
    pattern = re.compile(r'^%s\{shard="(\d+)"\} (\d+)$' % re.escape(name), re.M)
    return {int(s): int(v) for s, v in pattern.findall(body.decode())}


def wait_events(port, want, seconds=10.0):
    deadline = time.monotonic() + seconds
    got = {}
    while time.monotonic() < deadline:
        got = metric_values(port, "tessera_events_total")
        if len(got) == SHARDS and all(v == want for v in got.values()):
            return got
        time.sleep(0.1)
    return got


def test_redis_restart(res, pg, workdir):
    port = free_port()
    rdir = os.path.join(workdir, "redis")
    r = sh("tessera_redis_start '%s' %d 0" % (rdir, port))
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode())
    srv = start_server(pg, TESSERA_REDIS_URL="redis://127.0.0.1:%d" % port)
    try:
        res.check("ready with redis and its subscriber up", wait_ready(srv.port))
        status, body = ready(srv.port)
        res.check("/health/ready names the subscriber", body.get("checks", {}).get("redis_subscriber") == "up",
                  repr(body))
        subprocess.run(["redis-cli", "-p", str(port), "PUBLISH", "tessera:events", "7 42"],
                       stdout=subprocess.DEVNULL, timeout=10)
        got = wait_events(srv.port, 1)
        res.check("an event reaches every shard once", got == {s: 1 for s in range(SHARDS)}, repr(got))
        sh("tessera_redis_stop '%s'" % rdir)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ready(srv.port)[1].get("status") != "degraded":
            time.sleep(0.1)
        status, body = ready(srv.port)
        res.check("F06: redis down: /health/ready 200 \"degraded\" (subscriber down)",
                  status == 200 and body.get("status") == "degraded" and
                  body.get("checks", {}).get("redis_subscriber") == "down", repr(body))
        sh("tessera_redis_start '%s' %d 0" % (rdir, port))
        res.check("redis back: ready again by itself", wait_ready(srv.port))
        subprocess.run(["redis-cli", "-p", str(port), "PUBLISH", "tessera:events", "7 43"],
                       stdout=subprocess.DEVNULL, timeout=10)
        got = wait_events(srv.port, 2)
        res.check("resubscribed: the next event reaches every shard", got == {s: 2 for s in range(SHARDS)},
                  repr(got))
        subprocess.run(["redis-cli", "-p", str(port), "PUBLISH", "tessera:events", "not an event"],
                       stdout=subprocess.DEVNULL, timeout=10)
        time.sleep(0.3)
        res.check("a malformed event is ignored", wait_events(srv.port, 2, 1.0) == {s: 2 for s in range(SHARDS)})
        check_clean_exit(res, srv)
    finally:
        srv.kill()
        sh("tessera_redis_stop '%s'" % rdir)


def main():
    res = Results("the serving binary against failing Postgres and Redis")
    if not shutil.which("redis-server") or sh("tessera_pg_bindir").returncode != 0:
        print("SKIP: Postgres or redis-server is not installed")
        raise SystemExit(77)
    with tempfile.TemporaryDirectory() as workdir:
        pg = Postgres(workdir)
        try:
            pg.init()
            prepare_database(pg)
            res.run("statement past its budget", test_statement_past_budget, res, pg)
            res.run("postgres restarted under load", test_postgres_restart, res, pg)
            res.run("redis restarted", test_redis_restart, res, pg, workdir)
        finally:
            pg.stop("fast")
    res.finish()


if __name__ == "__main__":
    main()
