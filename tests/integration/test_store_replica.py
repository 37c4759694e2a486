#!/usr/bin/env python3
"""The serving binary with a read replica (issue 4: read-only queries may go to a replica when
TESSERA_PG_REPLICA_URL is set; SECURITY F03).

The test starts its own primary and a real streaming replica of it (pg_basebackup -R), then:
- /health/ready reports postgres and postgres_replica "up";
- JWKS reads (read-only statements) are answered from the replica: the replica's
  tessera_pg_queries_total grows by at least one per read; sign-ups (the tenant lookup may go to
  the replica, the insert may not) answer 201, which proves the insert went to the primary (the
  replica refuses any write, checked directly), and the new user shows up on the replica;
- the replica stopped: /health/ready stays 200 with postgres_replica "down", JWKS reads and
  sign-ups keep answering, now from the primary (its counters grow, the replica's do not);
- the replica restarted: the shards reconnect to it by themselves ("up" again) and reads go
  back to it; the server exits cleanly.
Skips when Postgres (initdb, pg_basebackup) is not installed.
"""
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid

from tessera_harness import Results, Server, check_clean_exit, tessera_bin
# tests/CMakeLists.txt runs `python3 <this file>`: its folder is sys.path[0], so the sibling
# test's helpers import (its main() runs only as a script).
from test_store_faults import Postgres, free_port, ready, request, sh

SHARDS = 2
TENANT = "acme"
READS = 20                # JWKS reads per phase: each must be counted on the expected server
POLLS = 16                # readiness answers in a row that must agree (each shard answers some)
CATCH_UP_S = 20.0         # a replica applying WAL on a loaded machine: generous
RECONNECT_S = 20.0        # reconnect backoff is capped at 5 s (store/pg.h PG_BACKOFF_MAX_MS)
BUDGET_MS = 1000
PASSWORD = "correct horse battery"
QUERIES = re.compile(r'^tessera_pg_queries_total\{shard="(\d+)",server="(primary|replica)",conn="\d+"\} (\d+)$',
                     re.M)


class Primary(Postgres):
    """test_store_faults' cluster, without durability (a throwaway cluster: FAST=1)."""

    def init(self):
        r = sh("tessera_pg_init '%s' '%s/run' 1 && tessera_pg_start '%s' %d '%s/log' && "
               "tessera_pg_create_db '%s' %d tessera_t tessera_t %s"
               % (self.data, self.dir, self.data, self.port, self.dir, self.data, self.port,
                  self.password))
        if r.returncode != 0:
            raise RuntimeError("postgres: " + r.stderr.decode())


class Replica:
    """A streaming replica of `primary` in <primary dir>/replica, its own port and socket dir."""

    def __init__(self, primary):
        self.primary = primary
        self.dir = primary.dir
        self.data = os.path.join(self.dir, "replica")
        self.sockdir = os.path.join(self.dir, "rrun")
        self.log = os.path.join(self.dir, "replica.log")
        self.port = free_port()
        self.url = "postgresql://tessera_t:%s@127.0.0.1:%d/tessera_t" % (primary.password, self.port)

    def init(self):
        # initdb's pg_hba has "local replication all peer": the postgres OS user may stream
        # over the primary's unix socket. -R writes standby.signal and primary_conninfo.
        r = sh("mkdir -p '%s' && chown \"$(tessera_pg_owner)\" '%s' && "
               "tessera_as_pg \"$(tessera_pg_bindir)/pg_basebackup\" -h '%s/run' -p %d -D '%s' "
               "-R -X stream -c fast && "
               "printf \"unix_socket_directories = '%%s'\\n\" '%s' >> '%s/postgresql.conf' && "
               "tessera_pg_start '%s' %d '%s'"
               % (self.sockdir, self.sockdir, self.dir, self.primary.port, self.data,
                  self.sockdir, self.data, self.data, self.port, self.log))
        if r.returncode != 0:
            raise RuntimeError("replica: " + r.stderr.decode())

    def start(self):
        r = sh("tessera_pg_start '%s' %d '%s'" % (self.data, self.port, self.log))
        if r.returncode != 0:
            raise RuntimeError("replica start: " + r.stderr.decode())

    def stop(self, mode="fast"):
        sh("tessera_pg_stop '%s' %s" % (self.data, mode))

    def superuser(self, sql):
        """SQL as the cluster owner over the replica's unix socket."""
        r = sh("tessera_pg_psql '%s' %d \"%s\"" % (self.data, self.port, sql))
        if r.returncode != 0:
            raise RuntimeError("replica psql: " + r.stderr.decode())

    def psql(self, sql):
        r = subprocess.run(["psql", self.url, "-X", "-qAtc", sql], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        return r.returncode, r.stdout.decode().strip(), r.stderr.decode().strip()

    def wait_visible(self, sql, want, seconds=CATCH_UP_S):
        deadline = time.monotonic() + seconds
        got = None
        while time.monotonic() < deadline:
            rc, got, _ = self.psql(sql)
            if rc == 0 and got == want:
                return True, got
            time.sleep(0.1)
        return False, got


def admin(pg, *args, key=None):
    env = dict(os.environ, TESSERA_PG_URL=pg.url)
    if key:
        env["TESSERA_MASTER_KEY_FILE"] = key
    r = subprocess.run([tessera_bin()] + list(args), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("tessera %s: %s" % (" ".join(args), r.stderr.decode()))
    return json.loads(r.stdout) if r.stdout.strip() else None


def prepare(pg, workdir):
    admin(pg, "migrate")
    admin(pg, "admin", "tenant", "create", TENANT)
    pg.psql("UPDATE tenants SET settings = '{\"registration\": \"open\"}' WHERE slug = '%s'" % TENANT)
    key = os.path.join(workdir, "master.key")
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    return rotate(pg, key), key


def rotate(pg, key):
    """Rotates the tenant's keys on the primary; the kids its JWKS must publish, sorted."""
    keys = admin(pg, "admin", "keys", "rotate", "--tenant", TENANT, "--alg", "ES256", key=key)
    return sorted(k["kid"] for k in keys["keys"] if k["state"] in ("active", "next") or
                  (k["state"] == "retired" and k["not_after"]))


def queries(port):
    """tessera_pg_queries_total summed over the shards: {"primary": n, "replica": n}."""
    status, _, body, _ = request(port, "GET", "/metrics")
    if status != 200:
        raise RuntimeError("/metrics answered %r" % status)
    out = {"primary": 0, "replica": 0}
    for _, server, value in QUERIES.findall(body.decode()):
        out[server] += int(value)
    return out


def replica_state(port, want, seconds):
    """True when POLLS readiness answers in a row are 200 with postgres "up" and
    postgres_replica `want`. Returns (ok, last body)."""
    deadline = time.monotonic() + seconds
    streak, body = 0, {}
    while time.monotonic() < deadline and streak < POLLS:
        status, body = ready(port)
        checks = body.get("checks", {})
        good = status == 200 and checks.get("postgres") == "up" and \
            checks.get("postgres_replica") == want
        streak = streak + 1 if good else 0
        if not good:
            time.sleep(0.1)
    return streak >= POLLS, body


def jwks_reads(port, n=READS):
    """n JWKS reads; returns the list of (status, sorted kids or None)."""
    out = []
    for _ in range(n):
        status, _, body, _ = request(port, "GET", "/t/%s/jwks.json" % TENANT)
        kids = None
        if status == 200:
            try:
                kids = sorted(k["kid"] for k in json.loads(body)["keys"])
            except (ValueError, KeyError, TypeError):
                kids = None
        out.append((status, kids))
    return out


def sign_up(port, name):
    status, _, body, _ = request(port, "POST", "/t/%s/api/v1/register" % TENANT,
                                 {"username": name, "password": PASSWORD})
    return status, body


class Reader:
    """JWKS reads in a loop across a transition; every answer's status recorded."""

    def __init__(self, port):
        self.port = port
        self.halt = threading.Event()
        self.statuses = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.halt.is_set():
            status, _, _, _ = request(self.port, "GET", "/t/%s/jwks.json" % TENANT, timeout=5)
            self.statuses.append(status)
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.thread.join(30)


def check_routing(res, srv, replica, kids):
    ok, body = replica_state(srv.port, "up", RECONNECT_S)
    res.check("ready: postgres and postgres_replica \"up\"", ok, repr(body))
    before = queries(srv.port)
    reads = jwks_reads(srv.port)
    after = queries(srv.port)
    res.check("JWKS reads answer 200 with the tenant's keys",
              all(r == (200, kids) for r in reads), repr(reads[:3]))
    res.check("JWKS reads are answered by the replica (its counter grew by >= %d)" % READS,
              after["replica"] - before["replica"] >= READS, "%r -> %r" % (before, after))
    rc, _, err = replica.psql("INSERT INTO tenants (slug, name) VALUES ('w', 'w')")
    res.check("the replica refuses writes (so a 201 means the insert went to the primary)",
              rc != 0 and "read-only" in err, err)
    names = ["r%d_%s" % (i, uuid.uuid4().hex[:8]) for i in range(5)]
    answers = [sign_up(srv.port, n) for n in names]
    res.check("sign-ups (writes) answer 201 while the replica serves reads",
              all(a[0] == 201 for a in answers), repr(answers[:2]))
    in_list = "','".join(names)
    res.check("... and are on the primary",
              replica.primary.psql("SELECT count(*) FROM users WHERE username IN ('%s')"
                                           % in_list) == str(len(names)))
    ok, got = replica.wait_visible("SELECT count(*) FROM users WHERE username IN ('%s')" % in_list,
                                   str(len(names)))
    res.check("... and replicate to the replica", ok, "replica sees %r" % got)


def check_replica_lag(res, srv, replica, kids, key):
    """Replay paused on the replica (a lagging replica): JWKS reads show the replica's view, which
    proves where they are answered; writes are unaffected. Returns the kids after the rotation."""
    replica.superuser("SELECT pg_wal_replay_pause()")
    new_kids = rotate(replica.primary, key)
    res.check("a rotation on the primary changes the published set", new_kids != kids,
              repr(new_kids))
    reads = jwks_reads(srv.port)
    res.check("replica lagging: JWKS reads are the replica's (stale) view, so the replica answers",
              all(r == (200, kids) for r in reads), repr(reads[:3]))
    name = "lag_%s" % uuid.uuid4().hex[:8]
    status, body = sign_up(srv.port, name)
    res.check("replica lagging: a sign-up answers 201 (the insert goes to the primary)",
              status == 201 and replica.primary.psql(
                  "SELECT count(*) FROM users WHERE username = '%s'" % name) == "1",
              "%r %r" % (status, body[:200]))
    rc, got, _ = replica.psql("SELECT count(*) FROM users WHERE username = '%s'" % name)
    res.check("... and the paused replica does not have it yet", rc == 0 and got == "0", got)
    replica.superuser("SELECT pg_wal_replay_resume()")
    deadline = time.monotonic() + CATCH_UP_S
    reads = []
    while time.monotonic() < deadline:
        reads = jwks_reads(srv.port, 4)
        if all(r == (200, new_kids) for r in reads):
            break
        time.sleep(0.1)
    res.check("replay resumed: JWKS reads show the rotated set",
              reads and all(r == (200, new_kids) for r in reads), repr(reads[:3]))
    return new_kids


def check_replica_down(res, srv, replica, kids):
    with Reader(srv.port) as reader:
        time.sleep(0.3)
        replica.stop("fast")
        ok, body = replica_state(srv.port, "down", RECONNECT_S)
        time.sleep(0.3)
    res.check("F03: replica stopped: /health/ready 200 with postgres_replica \"down\"", ok,
              repr(body))
    failed = [s for s in reader.statuses if s != 200]
    res.check("reads went on while the replica stopped (%d reads, %d not 200: %r)"
              % (len(reader.statuses), len(failed), sorted(set(failed), key=str)),
              reader.statuses and all(s in (200, 503) for s in reader.statuses))
    before = queries(srv.port)
    reads = jwks_reads(srv.port)
    status, body = sign_up(srv.port, "down_%s" % uuid.uuid4().hex[:8])
    after = queries(srv.port)
    res.check("replica down: JWKS reads answer 200 with the keys",
              all(r == (200, kids) for r in reads), repr(reads[:3]))
    res.check("replica down: reads fall back to the primary (its counter grew by >= %d)" % READS,
              after["primary"] - before["primary"] >= READS, "%r -> %r" % (before, after))
    res.check("replica down: the replica's counter did not grow",
              after["replica"] == before["replica"], "%r -> %r" % (before, after))
    res.check("replica down: a sign-up still answers 201", status == 201, repr(body[:200]))


def check_replica_back(res, srv, replica, kids):
    replica.start()
    ok, body = replica_state(srv.port, "up", RECONNECT_S)
    res.check("replica restarted: the shards reconnect by themselves (\"up\")", ok, repr(body))
    before = queries(srv.port)
    reads = jwks_reads(srv.port)
    after = queries(srv.port)
    res.check("replica back: JWKS reads answer 200", all(r == (200, kids) for r in reads),
              repr(reads[:3]))
    res.check("replica back: reads go to the replica again (its counter grew by >= %d)" % READS,
              after["replica"] - before["replica"] >= READS, "%r -> %r" % (before, after))


def test_replica(res, primary, replica, kids, key):
    srv = Server(TESSERA_SHARDS=SHARDS, TESSERA_PG_URL=primary.url,
                 TESSERA_PG_REPLICA_URL=replica.url, TESSERA_PG_QUERY_TIMEOUT_MS=BUDGET_MS,
                 TESSERA_ARGON2_M_KIB=256, TESSERA_ARGON2_T=1).start()
    try:
        check_routing(res, srv, replica, kids)
        kids = check_replica_lag(res, srv, replica, kids, key)
        check_replica_down(res, srv, replica, kids)
        check_replica_back(res, srv, replica, kids)
        check_clean_exit(res, srv)
    finally:
        srv.kill()


def main():
    res = Results("the serving binary with a streaming read replica")
    if sh("tessera_pg_bindir && test -x \"$(tessera_pg_bindir)/pg_basebackup\"").returncode != 0:
        print("SKIP: Postgres (initdb, pg_basebackup) is not installed")
        raise SystemExit(77)
    with tempfile.TemporaryDirectory() as workdir:
        primary = Primary(workdir)
        replica = Replica(primary)
        try:
            primary.init()
            kids, key = prepare(primary, workdir)
            res.check("the tenant has an active and a next key", len(kids) == 2, repr(kids))
            replica.init()
            rc, rec, err = replica.psql("SELECT pg_is_in_recovery()")
            res.check("the replica is in recovery (a standby)", rc == 0 and rec == "t", err or rec)
            marker = "m" + uuid.uuid4().hex[:12]
            primary.psql("UPDATE tenants SET name = '%s' WHERE slug = '%s'" % (marker, TENANT))
            ok, got = replica.wait_visible("SELECT name FROM tenants WHERE slug = '%s'" % TENANT,
                                           marker)
            res.check("a row written on the primary shows up on the replica", ok, repr(got))
            res.run("read replica", test_replica, res, primary, replica, kids, key)
        finally:
            replica.stop("immediate")
            primary.stop("fast")
    res.finish()


if __name__ == "__main__":
    main()
