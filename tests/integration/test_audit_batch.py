#!/usr/bin/env python3
"""Audit events written in batches (auth/audit_batch.c), issue 6 and DESIGN §1: the security
events that have no change of their own (a token issued, a client's failed authentication).

On a server with two shards and a flush interval of a second (the default is 100 ms; a longer
one keeps the batching check meaningful on a slow machine):
- 40 client_credentials tokens asked on 8 connections at once: exactly one token_issued row
  per token (its jti), naming the client, the address, the X-Request-Id sent with it (quotes
  and backslashes kept), grant_type and scope, with the moment of the request (not of the
  INSERT); every row has its own event_id; fewer INSERTs than events (batched);
- client authentication failures: a wrong secret at the token, introspection and revocation
  endpoints, an unknown client_id with a quote in it, a confidential client's password grant
  with a wrong secret: one client_auth_failed row each with its endpoint; a client_id that
  is not printable ASCII is kept as NULL (the batch is not refused); a request for a tenant
  that does not exist writes nothing and loses nothing else;
- the tenant admin's GET /audit?action=client_auth_failed lists them (rows of different shards'
  batches are in no particular order among themselves);
- nothing dropped (tessera_audit_events_total{outcome="dropped"} 0).
Faults:
- an INSERT blocked past its budget by a table lock (TESSERA_PG_QUERY_TIMEOUT_MS 300) is
  cancelled by the server's statement_timeout and sent again until the lock goes: each event
  is one row, counted written once (a batch whose commit was lost with its connection is
  the other resend; tests/store/test_audit_batch_sql.c shows ON CONFLICT skipping its rows);
- Postgres stopped with events queued: they wait (tessera_audit_pending), and are written once
  it is back, with their own moments;
- SIGTERM with events queued and a flush interval of a minute: the server writes them and
  exits 0 at once; with Postgres away it exits at its shutdown deadline, saying how many it
  could not write.
Skips when Postgres is not installed.
"""
import base64
import json
import re
import subprocess
import threading
import time
import urllib.parse

from tessera_harness import check_clean_exit, metric, metric_sum, metric_zero
from test_admin_users import client_token
from test_login import PASSWORD, TENANT, basic, call, jbody, jwt_claims, run_with_env

TOKENS = 40
THREADS = 8
SETTLE_S = 30          # the longest wait for queued events to be written
QUERY_TIMEOUT_MS = 300  # the blocked INSERT's budget: it times out and is sent again
SLOW_FLUSH_MS = 60000  # queued events wait a minute unless the shard is stopping
AWAY_FLUSH_MS = 4000   # events wait this long: Postgres is stopped before they are sent
BATCH_FLUSH_MS = 1000  # the batching check's: many tokens land in one window however slow
SHUTDOWN_MS = 1500     # the deadline of a SIGTERM while Postgres is away


def pg_timeouts(port):
    return metric_sum(port, "tessera_pg_timeouts_total")


def written(port):
    return metric(port, 'tessera_audit_events_total{outcome="written"}')


def dropped(port):
    return metric(port, 'tessera_audit_events_total{outcome="dropped"}')


def settle(port, timeout=SETTLE_S):
    """Waits until no event is queued; True when that happened."""
    return metric_zero(port, "tessera_audit_pending", timeout)


def token_request(port, client, request_id=None, **form):
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(client)}
    if request_id:
        headers["X-Request-Id"] = request_id
    body = urllib.parse.urlencode(dict({"grant_type": "client_credentials"}, **form))
    st, _, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, body, headers)
    return st, jbody(data)


def rows(env, where):
    """The audit rows matching where, in seq order, as dicts."""
    out = env.sql("SELECT coalesce(json_agg(json_build_object('event_id', event_id, 'actor_kind', actor_kind, "
                  "'actor_id', actor_id, 'action', action, 'target_kind', target_kind, 'target_id', target_id, "
                  "'ip', host(ip), 'request_id', request_id, 'details', details, "
                  "'at', extract(epoch FROM created_at)) ORDER BY seq), '[]') FROM audit_log WHERE %s" % where)
    return json.loads(out)


def jtis_of(tokens):
    return sorted(jwt_claims(t)["jti"] for t in tokens)


def issue(port, client, n, threads=THREADS, prefix="req-batch"):
    """n tokens on `threads` connections at once: (tokens, request ids by jti, start, end)."""
    tokens, by_jti, lock = [], {}, threading.Lock()

    def run(k):
        for i in range(k, n, threads):
            rid = '%s-%d-"q"\\b' % (prefix, i)
            st, body = token_request(port, client, rid)
            if st == 200:
                with lock:
                    tokens.append(body["access_token"])
                    by_jti[jwt_claims(body["access_token"])["jti"]] = rid

    t0 = time.time()
    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return tokens, by_jti, t0, time.time()


def check_tokens(res, env, port):
    svc = env.clients["svc"]
    res.check("the admin token's event is written first (setup)", settle(port))
    batches0, written0 = metric(port, "tessera_audit_batches_total"), written(port)
    tokens, by_jti, t0, t1 = issue(port, svc, TOKENS)
    res.check("%d client_credentials tokens (setup)" % TOKENS, len(tokens) == TOKENS, repr(len(tokens)))
    res.check("... their events are written within %d s" % SETTLE_S, settle(port))
    got = rows(env, "action = 'token_issued' AND actor_id = '%s'" % svc["client_id"])
    res.check("one token_issued row per token, by jti", sorted(r["target_id"] for r in got) == jtis_of(tokens),
              "%d rows for %d tokens" % (len(got), len(tokens)))
    good = [r for r in got if r["actor_kind"] == "client" and r["target_kind"] == "token" and r["ip"] == "127.0.0.1"
            and r["request_id"] == by_jti.get(r["target_id"])
            and r["details"] == {"grant_type": "client_credentials", "scope": "read write"}]
    res.check("... each names the client, the address, its X-Request-Id (quotes kept), grant and scope",
              len(good) == TOKENS, repr(got[:1]))
    res.check("... with the moment of its request", got and all(t0 - 1 <= r["at"] <= t1 + 0.5 for r in got),
              repr((t0, t1, sorted(r["at"] for r in got)[:3])))
    res.check("... each its own event_id", len({r["event_id"] for r in got}) == TOKENS and all(r["event_id"] for r in got))
    batches = metric(port, "tessera_audit_batches_total") - batches0
    res.check("... written by fewer INSERTs than events (batched): %d for %d" % (batches, TOKENS),
              0 < batches < TOKENS and written(port) - written0 == TOKENS, repr((batches, written(port) - written0)))


def form_post(port, path, form, authorization):
    return call(port, "POST", "/t/%s/%s" % (TENANT, path), urllib.parse.urlencode(form),
                {"Content-Type": "application/x-www-form-urlencoded", "Authorization": authorization})[0]


def raw_basic(client_id, secret):
    pair = "%s:%s" % (urllib.parse.quote(client_id, safe=""), urllib.parse.quote(secret, safe=""))
    return "Basic " + base64.b64encode(pair.encode()).decode()


def check_failures(res, env, port, admin_token):
    svc, app = env.clients["svc"], env.clients["app"]
    wrong = raw_basic(svc["client_id"], "not-the-secret")
    before = int(env.sql("SELECT count(*) FROM audit_log WHERE action = 'client_auth_failed'"))
    statuses = [form_post(port, "oauth2/token", {"grant_type": "client_credentials"}, wrong),
                form_post(port, "oauth2/introspect", {"token": "x"}, wrong),
                form_post(port, "oauth2/revoke", {"token": "x"}, wrong),
                form_post(port, "oauth2/token", {"grant_type": "client_credentials"}, raw_basic('no"such', "s")),
                form_post(port, "oauth2/token", {"grant_type": "client_credentials"}, raw_basic("caf\u00e9", "s")),
                form_post(port, "oauth2/token", {"grant_type": "password", "username": "alice",
                                                 "password": PASSWORD}, raw_basic(app["client_id"], "wrong"))]
    st, _, _ = call(port, "POST", "/t/nosuchtenant/oauth2/token",
                    urllib.parse.urlencode({"grant_type": "client_credentials"}),
                    {"Content-Type": "application/x-www-form-urlencoded", "Authorization": wrong})
    res.check("six failed client authentications: 401 each (setup)", statuses == [401] * 6, repr(statuses))
    res.check("... a seventh at a tenant that does not exist: 401 (setup)", st == 401, repr(st))
    tokens, _, _, _ = issue(port, svc, 2, threads=1, prefix="req-after")
    res.check("... their events are written", settle(port) and len(tokens) == 2)
    got = rows(env, "action = 'client_auth_failed'")[before:]
    key = lambda pair: (pair[0] or "", pair[1])  # shards write their batches apart: no order across them
    summary = sorted(((r["actor_id"], r["details"].get("endpoint")) for r in got), key=key)
    want = sorted([(svc["client_id"], "token"), (svc["client_id"], "introspect"), (svc["client_id"], "revoke"),
                   ('no"such', "token"), (None, "token"), (app["client_id"], "token")], key=key)
    res.check("client_auth_failed: one row each, the client as presented (NULL when not printable ASCII) and the "
              "endpoint; none for the tenant that does not exist", summary == want, repr(summary))
    res.check("... from the client's address, actor_kind client", got and all(r["ip"] == "127.0.0.1" and
                                                                           r["actor_kind"] == "client" for r in got))
    res.check("... and the tokens asked after them are written too (no batch refused)",
              len(rows(env, "target_id IN ('%s')" % "','".join(jtis_of(tokens)))) == 2)
    st, _, data = call(port, "GET", "/t/%s/api/v1/audit?action=client_auth_failed" % TENANT,
                       headers={"Authorization": "Bearer " + admin_token})
    listed = [e.get("actor_id") for e in jbody(data).get("events", [])]
    res.check("GET /audit?action=client_auth_failed lists them",
              st == 200 and sorted(listed, key=lambda a: a or "") == sorted((a for a, _ in want), key=lambda a: a or ""),
              repr((st, listed)))
    res.check("nothing dropped", dropped(port) == 0, repr(dropped(port)))


def check_lock_retry(res, env):
    """An INSERT held back past its budget, sent again: each event still one row. The lock is
    released only once a timeout was seen, so a slow machine cannot make the check moot."""
    srv = env.server(TESSERA_PG_QUERY_TIMEOUT_MS=QUERY_TIMEOUT_MS, TESSERA_SHARDS=1)
    locker = subprocess.Popen(["psql", env.pg.url, "-X", "-qAt"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        locker.stdin.write("BEGIN; LOCK TABLE audit_log IN SHARE MODE;\n")
        locker.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and env.sql(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'audit_log' AND l.mode = 'ShareLock' AND l.granted") != "1":
            time.sleep(0.02)
        tokens, _, _, _ = issue(srv.port, env.clients["svc"], 3, threads=1, prefix="req-lock")
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline and pg_timeouts(srv.port) == 0:
            time.sleep(0.05)
        timeouts = pg_timeouts(srv.port)
        res.check("3 tokens issued while audit_log is locked: their INSERT passes its budget (setup)",
                  len(tokens) == 3 and timeouts > 0 and written(srv.port) == 0,
                  repr((len(tokens), timeouts, written(srv.port))))
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(30)
        res.check("... their events are written once the lock is gone", settle(srv.port))
        ids = env.sql("SELECT target_id FROM audit_log WHERE target_id IN ('%s') ORDER BY 1"
                      % "','".join(jtis_of(tokens))).split("\n")
        res.check("an INSERT past its budget, sent again: each event exactly one row, counted written once",
                  ids == jtis_of(tokens) and written(srv.port) == 3, repr((ids, written(srv.port))))
        check_clean_exit(res, srv, "the server exits 0 after the lock test")
    finally:
        if locker.poll() is None:
            locker.kill()
        srv.kill()


def check_postgres_away(res, env):
    srv = env.server(TESSERA_AUDIT_FLUSH_MS=AWAY_FLUSH_MS, TESSERA_SHARDS=1)
    try:
        tokens, _, t0, _ = issue(srv.port, env.clients["svc"], 4, threads=1, prefix="req-away")
        env.pg.stop("fast")
        stopped_at = time.time()
        time.sleep(max(0.0, t0 + AWAY_FLUSH_MS / 1000.0 + 0.5 - time.time()))  # a flush was tried
        pending, done = metric(srv.port, "tessera_audit_pending"), written(srv.port)
        res.check("Postgres stopped with events queued: they wait (%s queued, %s written before)" % (pending, done),
                  len(tokens) == 4 and pending and pending + done == 4, repr((pending, done)))
        env.pg.start()
        res.check("... Postgres back: they are written", settle(srv.port))
        got = rows(env, "target_id IN ('%s')" % "','".join(jtis_of(tokens)))
        res.check("... each once, with the moment of its request (before Postgres stopped)",
                  sorted(r["target_id"] for r in got) == jtis_of(tokens) and
                  all(t0 - 1 <= r["at"] <= stopped_at for r in got), repr(got[:1]))
        res.check("... nothing dropped", dropped(srv.port) == 0)
        check_clean_exit(res, srv, "the server exits 0 after Postgres came back")
    finally:
        srv.kill()


def check_sigterm(res, env):
    srv = env.server(TESSERA_AUDIT_FLUSH_MS=SLOW_FLUSH_MS)
    try:
        tokens, _, _, _ = issue(srv.port, env.clients["svc"], 3, threads=1, prefix="req-term")
        pending = metric(srv.port, "tessera_audit_pending")
        t0 = time.monotonic()
        check_clean_exit(res, srv, "SIGTERM with 3 events queued for a minute: exit 0")
        took = time.monotonic() - t0
        res.check("... at once (%.2f s), not after the flush interval" % took, pending == 3 and took < 10,
                  repr(pending))
        got = rows(env, "target_id IN ('%s')" % "','".join(jtis_of(tokens)))
        res.check("... and the events are written", len(got) == 3, repr(len(got)))
    finally:
        srv.kill()
    srv = env.server(TESSERA_AUDIT_FLUSH_MS=SLOW_FLUSH_MS, TESSERA_SHUTDOWN_TIMEOUT_MS=SHUTDOWN_MS,
                     TESSERA_SHARDS=1)
    try:
        tokens, _, _, _ = issue(srv.port, env.clients["svc"], 2, threads=1, prefix="req-lost")
        env.pg.stop("fast")
        t0 = time.monotonic()
        rc = srv.stop()
        took = time.monotonic() - t0
        log = srv.stderr_text()
        res.check("SIGTERM with Postgres away: exit 0 at the shutdown deadline (%.2f s)" % took,
                  rc == 0 and len(tokens) == 2 and took < 10 and not srv.sanitizer_report(), repr(rc))
        res.check("... saying the 2 events it could not write",
                  re.search(r'audit events were not written before the shard stopped.*"events":"2"', log) is not None,
                  log[-800:])
    finally:
        srv.kill()
        env.pg.start()


def run_all(res, env):
    admin = env.admin("admin", "client", "create", "--tenant", TENANT, "--name", "auditor", "--scope", "audit:read",
                      "--grant", "client_credentials")
    env.user("alice")
    srv = env.server(TESSERA_AUDIT_FLUSH_MS=BATCH_FLUSH_MS)
    try:
        admin_token = client_token(srv.port, admin)
        check_tokens(res, env, srv.port)
        check_failures(res, env, srv.port, admin_token)
        check_clean_exit(res, srv)
    finally:
        srv.kill()
    check_lock_retry(res, env)
    check_postgres_away(res, env)
    check_sigterm(res, env)


def main():
    run_with_env('audit events written in batches', 'audit batches', run_all)


if __name__ == "__main__":
    main()
