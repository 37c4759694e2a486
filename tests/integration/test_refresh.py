#!/usr/bin/env python3
"""Refresh-token rotation at POST /t/{tenant}/oauth2/token, grant_type=refresh_token
(issue 6; RFC 6749 §6; RFC 9700 §4.14; SECURITY O15–O20, F05, F08, F09).

Starts its own Postgres cluster and Redis, and two Tessera instances A and B (two shards
each) on them. Sessions come from the password login (auth/login.c). Every issued access
token is checked with /verify and introspection on fresh connections to both instances:
- a refresh answers 200 {access_token, token_type, expires_in, refresh_token, scope} with
  no-store; the new refresh token names the same session, the old SHA-256 moved to
  refresh_prev_sha256, the sliding expiry moved, never past the absolute cap;
- O15: the previous token presented again → invalid_grant; the session is revoked
  (revoked_at, a 'sid' revocation, audit refresh_reuse_detected); the current token is dead
  too, and every access token of the session (also ones already in the verify caches) is
  refused by /verify and introspection on every shard of A and of B;
- O17: a refresh whose answer is lost (the connection closed unread once Postgres shows the
  rotation): the rotation stands; the client's retry of the same token is treated as reuse
  (Tessera has no grace window: RFC 9700 §4.14.2 lets the server revoke the family) →
  invalid_grant, the session revoked and its access token refused on A and B;
- O16: one token presented twice at the same moment, on one instance and on A and B at
  once: exactly one 200, and at most one live successor;
- the session's owner shard (DESIGN §1, auth/session_owner.c): rotations of 12 sessions at once
  on fresh connections all succeed, each ran once on its session's owner (both shards own
  some), those landing on the other shard forwarded; with the session's row locked by another
  transaction, 6 presentations of one token put one statement in Postgres while 5 wait on the
  owner, and then exactly one succeeds;
- a shard's Postgres connection waiting on a row lock is passed over (store.c): with a
  rotation blocked by another transaction's lock, 10 concurrent GET /me/sessions on that
  one-shard server answer at once on its other connection;
- a client deleted while the shards hold it in their client caches: its refresh tokens are
  invalid_grant at once (the rotation reads the client row);
- O18: another client presents the token → invalid_grant and the token still works;
- O19: a wider scope → invalid_scope and the token is not spent; a narrower one is granted;
- O20: idle expiry, absolute cap, revoked session, disabled user → invalid_grant;
- public clients (no secret) refresh with client_id alone; a confidential client must
  authenticate (401 invalid_client);
- logout: the session's access tokens refused on A and B, its refresh token invalid_grant
  (O20 logout), the user's other session untouched; logout-all: every session of the user
  ends, another user's stays; no token or a bad one 401, a client's own token 400;
- logout-all as a 'sub' not-before: a session idle for 10 minutes (its token issued by a server
  whose clock libfaketime sets 10 minutes back) gets no 'sid' row, only the user's one 'sub' row,
  and its token is refused on every shard of A and B all the same (and by a server started
  afterwards); a login right after logout-all works;
- O38 (RFC 7009): the session's client revoking the refresh token ends the session and its
  access tokens; another client's revocation answers 200 and changes nothing; revoking a user's
  access token writes its 'jti' revocation (refused on A and B) and leaves its session alive;
- T03: acme's refresh token at beta's token endpoint, by beta's client: invalid_grant, and the
  session still refreshes at acme;
- F05: Redis restarted from a snapshot taken before a refresh token was spent (a marker key
  deleted after the snapshot is back): the spent token is still invalid_grant on A and B, as
  reuse (the session revoked, its successor dead too): a rotation lives in Postgres only;
- F08: kill -9 right after an acknowledged rotation: after restart the new token works and
  the old one is refused;
- tenants signing EdDSA and ES256 (on the shard, auth_sign_job): login, refresh and the
  password grant answer tokens of that algorithm that verify on A and B;
- F09: kill -9 after a rotation committed, its answer never read: the client's retry of the
  old token after restart revokes the family (no grace window, as O17).
Skips when Postgres (initdb) or redis-server is not installed.
"""
import base64
import hashlib
import json
import socket
import subprocess
import threading
import time
import urllib.parse

from tessera_harness import check_clean_exit, faketime_env
from test_login import (PASSWORD, basic, call, good_login, hdr, introspect, jbody, jwt_claims, login,
                        run_with_env, sid_of, verify)
from test_store_faults import metric_values, sh

PROPAGATION_S = 2.0   # a 'sid' revocation reaches B by Redis (ms) or, at worst, the 1 s poll
FRESH = 6             # fresh connections per instance: both shards with near certainty
RACES = 6             # concurrent double presentations per setting
OWNER_SESSIONS = 12   # sessions refreshed at once, each on fresh connections
OWNER_ROTATIONS = 3   # rotations per session
OWNER_RACERS = 6      # concurrent presentations of one token while its row is locked
STALL_READS = 10      # concurrent reads while a statement waits on a lock
STALL_ANSWER_S = 3.0  # each answers within this (the lock is held until all have)
OWNER_WARMUP = 6      # refreshes on fresh connections before the lock
OWNER_ARRIVAL_S = 5   # for the racers to reach the owner (or, without it, Postgres)
OWNER_WAITS_MIN = 2   # of the 5 others, those seen waiting on the owner: a racer's earlier read (its
                      # tenant's keys, say) may queue behind the locked statement on the owner's
                      # pipelined connection before that connection counts as stalled (store.c)
OWNER_LOCK_BUDGET_MS = 30000  # that test's server: its statements wait out the lock


def refresh(port, rt, client=None, client_id=None, scope=None):
    form = {"grant_type": "refresh_token", "refresh_token": rt}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if client is not None:
        headers["Authorization"] = basic(client)
    if client_id is not None:
        form["client_id"] = client_id
    if scope is not None:
        form["scope"] = scope
    status, hdrs, data = call(port, "POST", "/t/acme/oauth2/token", urllib.parse.urlencode(form), headers)
    return status, hdrs, jbody(data)


def sha(rt):
    return hashlib.sha256(rt.encode()).hexdigest()


def everywhere_refused(env, ports, token, deadline_s=PROPAGATION_S):
    """True once /verify says 401 and introspection inactive on FRESH connections to each port."""
    deadline = time.monotonic() + deadline_s
    while True:
        ok = all(verify(p, token)[0] == 401 and introspect(p, token, env.clients["svc"])[1].get("active") is False
                 for p in ports for _ in range(FRESH))
        if ok or time.monotonic() > deadline:
            return ok
        time.sleep(0.05)


def everywhere_valid(env, ports, token):
    return all(verify(p, token)[0] == 200 and introspect(p, token, env.clients["svc"])[1].get("active") is True
               for p in ports for _ in range(FRESH))


def test_rotation(res, env, a, b):
    app = env.clients["app"]
    env.user("rita")
    st, _, first = good_login(env, a.port, "rita")
    rt1 = first["refresh_token"]
    env.sql("UPDATE sessions SET expires_at = now() + interval '1 hour', updated_at = now() - interval '1 day' "
            "WHERE id = '%s'" % sid_of(rt1))
    st, headers, body = refresh(a.port, rt1, client=app)
    res.check("refresh: 200 with access_token, token_type, expires_in, refresh_token, scope",
              st == 200 and sorted(body) == ["access_token", "expires_in", "refresh_token", "scope", "token_type"]
              and hdr(headers, "cache-control") == "no-store", "%s %r" % (st, body))
    rt2 = body.get("refresh_token", "")
    claims = jwt_claims(body["access_token"])
    res.check("refresh: a new token of the same session; the JWT carries its sid and the user",
              rt2 != rt1 and sid_of(rt2) == sid_of(rt1) and claims.get("sid") == sid_of(rt1)
              and claims.get("sub") == env.users["rita"], repr(claims))
    row = env.sql("SELECT encode(refresh_sha256, 'hex'), encode(refresh_prev_sha256, 'hex'), "
                  "expires_at > now() + interval '13 days', expires_at <= absolute_expires_at, "
                  "updated_at > now() - interval '1 minute' "
                  "FROM sessions WHERE id = '%s'" % sid_of(rt1)).split("|")
    res.check("refresh: current and previous SHA-256 stored; sliding expiry moved, within the cap; "
              "updated_at moved (set by the statement: migration 0010 dropped the trigger)",
              row == [sha(rt2), sha(rt1), "t", "t", "t"], repr(row))
    res.check("refresh: the new access token verifies on A and B",
              everywhere_valid(env, (a.port, b.port), body["access_token"]))
    env.sql("UPDATE sessions SET absolute_expires_at = now() + interval '1 hour' WHERE id = '%s'" % sid_of(rt1))
    st, _, body3 = refresh(b.port, rt2, client=app)
    capped = env.sql("SELECT expires_at = absolute_expires_at FROM sessions WHERE id = '%s'" % sid_of(rt1))
    res.check("refresh on B: 200; the sliding expiry stops at the absolute cap", st == 200 and capped == "t",
              "%s %s" % (st, capped))
    return first["access_token"], body["access_token"], rt1, rt2, body3


def test_o15(res, env, a, b):
    app = env.clients["app"]
    at1, at2, rt1, rt2, last = test_rotation(res, env, a, b)
    rt3, at3 = last["refresh_token"], last["access_token"]
    res.check("O15: before the reuse, every access token of the session is valid on A and B (and cached)",
              all(everywhere_valid(env, (a.port, b.port), tok) for tok in (at1, at2, at3)))
    st, _, body = refresh(a.port, rt2, client=app)
    res.check("O15: the previous token again → 400 invalid_grant", st == 400 and body.get("error") == "invalid_grant",
              "%s %r" % (st, body))
    sid = sid_of(rt1)
    row = env.sql("SELECT revoked_at IS NOT NULL FROM sessions WHERE id = '%s'" % sid)
    rev = env.sql("SELECT count(*) FROM revocations WHERE kind = 'sid' AND value = '%s'" % sid)
    audit = env.sql("SELECT count(*) FROM audit_log WHERE action = 'refresh_reuse_detected' AND target_id = '%s'" % sid)
    res.check("O15: session revoked, a 'sid' revocation, audit refresh_reuse_detected",
              row == "t" and rev == "1" and audit == "1", "%s %s %s" % (row, rev, audit))
    st, _, body = refresh(b.port, rt3, client=app)
    res.check("O15: the current token is dead too", st == 400 and body.get("error") == "invalid_grant", repr(body))
    for name, tok in (("first", at1), ("second", at2), ("latest", at3)):
        res.check("O15: the session's %s access token is refused on every shard of A and B" % name,
                  everywhere_refused(env, (a.port, b.port), tok))


def lost_refresh(env, port, rt, client, server=None):
    """Presents rt, waits until Postgres shows it rotated, and closes the connection without
    reading the answer: the response carrying the successor is lost in transit (with server,
    that process is SIGKILLed first). True once the rotation was seen committed."""
    form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": rt}).encode()
    head = ("POST /t/acme/oauth2/token HTTP/1.1\r\nHost: localhost\r\nAuthorization: %s\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
            % (basic(client), len(form))).encode()
    rotated = ("SELECT count(*) FROM sessions WHERE id = '%s' AND refresh_prev_sha256 = decode('%s', 'hex')"
               % (sid_of(rt), sha(rt)))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head + form)
        deadline = time.monotonic() + PROPAGATION_S
        while env.sql(rotated) != "1":
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        if server is not None:
            server.proc.kill()
            server.proc.wait()
    return True


def test_o17(res, env, a, b):
    app = env.clients["app"]
    env.user("otto")
    st, _, first = good_login(env, a.port, "otto")
    rt1, at1 = first["refresh_token"], first["access_token"]
    res.check("O17: the rotation commits although its answer is never read", lost_refresh(env, a.port, rt1, app))
    res.check("O17: the session's access token is still valid before the retry",
              everywhere_valid(env, (a.port, b.port), at1))
    st, _, body = refresh(b.port, rt1, client=app)
    res.check("O17: the retry of the rotated token → 400 invalid_grant (no grace window)",
              st == 400 and body.get("error") == "invalid_grant", "%s %r" % (st, body))
    sid = sid_of(rt1)
    res.check("O17: the retry revoked the family: session revoked, audit refresh_reuse_detected",
              env.sql("SELECT revoked_at IS NOT NULL FROM sessions WHERE id = '%s'" % sid) == "t"
              and env.sql("SELECT count(*) FROM audit_log WHERE action = 'refresh_reuse_detected' "
                          "AND target_id = '%s'" % sid) == "1")
    res.check("O17: the session's access token is refused on every shard of A and B",
              everywhere_refused(env, (a.port, b.port), at1))


def jwt_alg(token):
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))).get("alg")


def test_inline_signing(res, env, a, b):
    """EdDSA and ES256 tenants sign on the shard (auth_sign_job), RS256 on the worker pool: the
    same answers either way."""
    for alg in ("EdDSA", "ES256"):
        slug = "fast-" + alg.lower()
        env.admin("admin", "tenant", "create", slug)
        env.admin("admin", "keys", "rotate", "--tenant", slug, "--alg", alg)
        app = env.admin("admin", "client", "create", "--tenant", slug, "--name", "app", "--scope", "read",
                        "--first-party", "--grant", "password", "--grant", "refresh_token")
        env.admin("admin", "user", "create", "--tenant", slug, "--username", "sam", "--password-stdin",
                  stdin=(PASSWORD + "\n").encode())
        st, _, data = login(a.port, {"username": "sam", "password": PASSWORD, "client_id": app["client_id"]},
                            tenant=slug)
        first = jbody(data)
        form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": first.get("refresh_token", "")})
        st2, _, data2 = call(b.port, "POST", "/t/%s/oauth2/token" % slug, form,
                             {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(app)})
        second = jbody(data2)
        at = second.get("access_token", "")
        res.check("%s tenant: login and a refresh answer 200, the new token signed %s" % (alg, alg),
                  st == 200 and st2 == 200 and at and jwt_alg(at) == alg, "%s %s %r" % (st, st2, second))
        res.check("%s tenant: the refreshed token verifies on A and B" % alg,
                  at and all(verify(p, at, tenant=slug)[0] == 200 for p in (a.port, b.port)))
        form = urllib.parse.urlencode({"grant_type": "password", "username": "sam", "password": PASSWORD})
        st3, _, data3 = call(a.port, "POST", "/t/%s/oauth2/token" % slug, form,
                             {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(app)})
        res.check("%s tenant: the password grant answers 200 with a %s token" % (alg, alg),
                  st3 == 200 and jwt_alg(jbody(data3).get("access_token", "x.y.z")) == alg, "%s %r" % (st3, data3))


def race(port_a, port_b, rt, client):
    """Presents rt on port_a and port_b at the same moment; the two answers."""
    out = [None, None]
    gate = threading.Barrier(2)

    def one(i, port):
        gate.wait()
        out[i] = refresh(port, rt, client=client)
    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate((port_a, port_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_o16(res, env, a, b):
    app = env.clients["app"]
    env.user("olga")
    for label, pa, pb in (("one instance", a.port, a.port), ("two instances", a.port, b.port)):
        bad = []
        for _ in range(RACES):
            rt = good_login(env, a.port, "olga")[2]["refresh_token"]
            answers = race(pa, pb, rt, app)
            oks = [r for r in answers if r[0] == 200]
            others = [r for r in answers if r[0] != 200]
            live = [r[2]["refresh_token"] for r in oks if refresh_alive(env, r[2]["refresh_token"])]
            if len(oks) != 1 or any(r[2].get("error") != "invalid_grant" for r in others) or len(live) > 1:
                bad.append([(r[0], r[2]) for r in answers])
        res.check("O16 (%s): a token presented twice at once → exactly one 200, the other invalid_grant"
                  % label, not bad, repr(bad[:2]))


def shard_sum(port, name):
    return sum(metric_values(port, name).values())


def test_owner_forwarding(res, env, a):
    """Rotations from many connections land on both shards; each runs on its session's owner."""
    app = env.clients["app"]
    env.user("oona")
    chains = [good_login(env, a.port, "oona")[2]["refresh_token"] for _ in range(OWNER_SESSIONS)]
    rot0 = metric_values(a.port, "tessera_session_rotations_total")
    fwd0 = shard_sum(a.port, "tessera_session_forwarded_total")
    failures = []

    def chain(i):
        rt = chains[i]
        for _ in range(OWNER_ROTATIONS):
            status, _, body = refresh(a.port, rt, client=app)  # a fresh connection each time
            if status != 200 or verify(a.port, body["access_token"])[0] != 200:
                failures.append((status, body))
                return
            rt = body["refresh_token"]
    threads = [threading.Thread(target=chain, args=(i,)) for i in range(OWNER_SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rot1 = metric_values(a.port, "tessera_session_rotations_total")
    ran = {s: rot1[s] - rot0.get(s, 0) for s in rot1}
    forwarded = shard_sum(a.port, "tessera_session_forwarded_total") - fwd0
    total = OWNER_SESSIONS * OWNER_ROTATIONS
    res.check("owner: %d rotations from %d connections at once all answered 200 with a valid token"
              % (total, total), not failures, repr(failures[:2]))
    res.check("owner: every rotation ran once, on its session's owner, and both shards own some",
              sum(ran.values()) == total and len(ran) == 2 and all(v > 0 for v in ran.values()), repr(ran))
    res.check("owner: the rotations that landed on the other shard were forwarded to the owner",
              0 < forwarded < total, "forwarded %d of %d" % (forwarded, total))


def test_stalled_connection(res, env):
    """A shard's Postgres connection whose statement waits on a row lock is passed over: the
    shard's other queries go to its other connection instead of queueing behind it."""
    env.user("stella")
    srv = env.server(TESSERA_SHARDS=1, TESSERA_PG_CONNECTIONS=2, TESSERA_PG_QUERY_TIMEOUT_MS=OWNER_LOCK_BUDGET_MS)
    holder = None
    blocked, answers, threads = [], [], []
    try:
        rt = good_login(env, srv.port, "stella")[2]["refresh_token"]
        at = good_login(env, srv.port, "stella")[2]["access_token"]  # another session's
        holder = lock_session_row(env, rt[3:39])
        threads.append(threading.Thread(target=lambda: blocked.append(refresh(srv.port, rt, client=env.clients["app"]))))
        threads[0].start()
        wait_lock_waiters(env, 1)
        time.sleep(0.1)  # past STORE_PG_STALL_MS

        def one():
            t0 = time.monotonic()
            status, _, data = call(srv.port, "GET", "/t/acme/api/v1/me/sessions",
                                   headers={"Authorization": "Bearer " + at})
            answers.append((status, len(jbody(data).get("sessions", [])), time.monotonic() - t0))
        more = [threading.Thread(target=one) for _ in range(STALL_READS)]
        for t in more:
            t.start()
        for t in more:
            t.join(timeout=STALL_ANSWER_S + 5)
        threads += more
        waiting = lock_waiters(env)
        res.check("stalled connection: with one statement waiting on a row lock, %d concurrent "
                  "GET /me/sessions on the shard answer both sessions within %.0f s, the lock still held"
                  % (STALL_READS, STALL_ANSWER_S),
                  len(answers) == STALL_READS and waiting == 1 and
                  all(st == 200 and n == 2 and dt < STALL_ANSWER_S for st, n, dt in answers),
                  "waiting on the lock %d, answers %r" % (waiting, answers))
    finally:
        release(holder, threads, srv)
    res.check("stalled connection: the waiting rotation completes once the lock is gone",
              blocked and blocked[0][0] == 200, repr(blocked))


def test_deleted_client(res, env, a):
    """The refresh grant authenticates from the shard's client cache; its rotation reads the client
    row again, so a client deleted while cached on every shard is refused at once."""
    gone = env.client("gone", "--first-party", "--grant", "refresh_token", "--grant", "password")
    env.user("gina")
    rt = good_login(env, a.port, "gina", client="gone")[2]["refresh_token"]
    for _ in range(FRESH):  # fresh connections: the client cached on both shards
        status, _, body = refresh(a.port, rt, client=gone)
        if status != 200:
            break
        rt = body["refresh_token"]
    res.check("deleted client: its refreshes work before", status == 200, "%s %r" % (status, body))
    env.admin("admin", "client", "delete", "--tenant", "acme", "--client-id", gone["client_id"])
    answers = [refresh(a.port, rt, client=gone) for _ in range(FRESH)]
    # A shard still holding the client in its cache authenticates it and the rotation refuses it
    # (400 invalid_grant); one whose entry has expired or never held it reads the row (401).
    refused = ((400, "invalid_grant"), (401, "invalid_client"))
    res.check("deleted client: right after `admin client delete`, its refresh token is refused on every "
              "shard, cached client or not (400 invalid_grant / 401 invalid_client, never 200)",
              all((st, body.get("error")) in refused for st, _, body in answers),
              repr([(st, body) for st, _, body in answers]))


def lock_waiters(env):
    return int(env.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND query LIKE 'UPDATE sessions%'"))


def lock_session_row(env, sid):
    """A psql session holding the session row's lock (an open transaction), once it holds it."""
    holder = subprocess.Popen(["psql", env.pg.url, "-X", "-q", "-v", "ON_ERROR_STOP=1"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    holder.stdin.write("BEGIN;\nSELECT 1 FROM sessions WHERE id = '%s' FOR UPDATE;\n" % sid)
    holder.stdin.flush()
    deadline = time.monotonic() + 10
    while int(env.sql("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                      "WHERE a.state = 'idle in transaction' AND l.mode = 'RowShareLock'")) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the row lock was not taken")
        time.sleep(0.02)
    return holder


def release(holder, threads, srv):
    """The lock's end (when it was taken), then the requests that waited on it, then the server."""
    if holder is not None:
        holder.stdin.write("COMMIT;\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    for t in threads:
        t.join()
    srv.kill()


def wait_lock_waiters(env, n):
    deadline = time.monotonic() + 10
    while lock_waiters(env) < n:
        if time.monotonic() > deadline:
            raise RuntimeError("no statement waits on the row lock")
        time.sleep(0.02)


def test_owner_serialised(res, env):
    """With the session's row locked by another transaction, concurrent presentations of one token
    on one instance put one statement in Postgres; the others wait on the owner shard. A server of
    its own whose statements outlast the lock (the default budget is 2 s)."""
    app = env.clients["app"]
    env.user("owen")
    srv = env.server(TESSERA_PG_QUERY_TIMEOUT_MS=OWNER_LOCK_BUDGET_MS)
    holder = None
    answers = []
    threads = []
    try:
        rt = good_login(env, srv.port, "owen")[2]["refresh_token"]
        for _ in range(OWNER_WARMUP):  # the shards load the tenant's keys now, not behind the lock
            rt = refresh(srv.port, rt, client=app)[2]["refresh_token"]
        waits0 = shard_sum(srv.port, "tessera_session_waits_total")
        holder = lock_session_row(env, rt[3:39])
        threads = [threading.Thread(target=lambda: answers.append(refresh(srv.port, rt, client=app)))
                   for _ in range(OWNER_RACERS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + OWNER_ARRIVAL_S
        waits = 0
        while time.monotonic() < deadline:
            waits = shard_sum(srv.port, "tessera_session_waits_total") - waits0
            if (waits >= OWNER_RACERS - 1 and lock_waiters(env) >= 1) or lock_waiters(env) > 1:
                break
            time.sleep(0.02)
        time.sleep(0.3)  # a second statement, were one sent, would be waiting by now
        waiting = lock_waiters(env)
        waits = shard_sum(srv.port, "tessera_session_waits_total") - waits0
        res.check("owner: %d presentations at once, the row locked elsewhere → one statement waits in "
                  "Postgres, the others on the owner shard" % OWNER_RACERS,
                  waiting == 1 and waits >= OWNER_WAITS_MIN, "in Postgres %d, on the owner %d" % (waiting, waits))
    finally:
        release(holder, threads, srv)
    oks = [r for r in answers if r[0] == 200]
    res.check("owner: then exactly one 200, the others invalid_grant (reuse: the session revoked)",
              len(oks) == 1 and all(r[2].get("error") == "invalid_grant" for r in answers if r[0] != 200)
              and not refresh_alive(env, oks[0][2]["refresh_token"]),
              repr([(r[0], r[2].get("error")) for r in answers]))


def refresh_alive(env, rt):
    return env.sql("SELECT count(*) FROM sessions WHERE id = '%s' AND revoked_at IS NULL AND "
                   "refresh_sha256 = decode('%s', 'hex')" % (sid_of(rt), sha(rt))) == "1"


def test_o18_o19(res, env, a, b):
    app, other = env.clients["app"], env.clients["other"]
    env.user("sam")
    rt = good_login(env, a.port, "sam")[2]["refresh_token"]
    st, _, body = refresh(a.port, rt, client=other)
    res.check("O18: another client presents the token → invalid_grant",
              st == 400 and body.get("error") == "invalid_grant", "%s %r" % (st, body))
    st, _, body = refresh(a.port, rt, client=dict(app, client_secret="wrong"))
    res.check("a wrong client secret → 401 invalid_client", st == 401 and body.get("error") == "invalid_client",
              "%s %r" % (st, body))
    st, _, body = refresh(a.port, rt, client_id=app["client_id"])
    res.check("a confidential client without its secret → 401 invalid_client",
              st == 401 and body.get("error") == "invalid_client", "%s %r" % (st, body))
    st, _, body = refresh(a.port, rt, client=app, scope="read write admin")
    res.check("O19: a wider scope → invalid_scope", st == 400 and body.get("error") == "invalid_scope",
              "%s %r" % (st, body))
    st, _, body = refresh(a.port, rt, client=app, scope="read")
    res.check("O18/O19: the token was untouched; a narrower scope is granted",
              st == 200 and body.get("scope") == "read" and jwt_claims(body["access_token"]).get("scope") == "read",
              "%s %r" % (st, body))
    st, _, body = refresh(a.port, body.get("refresh_token", ""), client=app)
    res.check("RFC 6749 §6: without scope the next refresh has the original scope",
              st == 200 and sorted(body.get("scope", "").split()) == ["read", "write"], repr(body))
    for label, tok in (("malformed", "rt_nonsense"), ("unknown", "rt_%s.%s" % (sid_of(rt), "A" * 43))):
        st, _, body = refresh(a.port, tok, client=app)
        res.check("a %s refresh token → invalid_grant" % label, st == 400 and body.get("error") == "invalid_grant",
                  repr(body))
    st, _, body = refresh(a.port, "", client=app)
    res.check("an empty refresh_token → invalid_request", st == 400 and body.get("error") == "invalid_request",
              repr(body))


def test_o20(res, env, a, b):
    app = env.clients["app"]
    env.user("ida")
    cases = (
        ("idle expiry", "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = '%s'"),
        ("absolute cap", "UPDATE sessions SET absolute_expires_at = now() - interval '1 second' WHERE id = '%s'"),
        ("revoked session", "UPDATE sessions SET revoked_at = now() WHERE id = '%s'"),
        ("disabled user", "UPDATE users SET disabled = true WHERE id = (SELECT user_id FROM sessions "
                          "WHERE id = '%s')"),
    )
    for label, statement in cases:
        rt = good_login(env, a.port, "ida")[2]["refresh_token"]
        env.sql(statement % sid_of(rt))
        st, _, body = refresh(b.port, rt, client=app)
        res.check("O20: %s → invalid_grant" % label, st == 400 and body.get("error") == "invalid_grant",
                  "%s %r" % (st, body))
    env.sql("UPDATE users SET disabled = false WHERE username = 'ida'")
    first = good_login(env, a.port, "ida")[2]
    heard = lambda: sum(metric_values(a.port, "tessera_events_total").values()) + \
        sum(metric_values(b.port, "tessera_events_total").values())
    events_before = heard()
    out = env.admin("admin", "user", "disable", "--tenant", "acme", "--username", "ida")
    res.check("O20: the admin CLI's user disable ends the user's sessions", (out.get("sessions_ended") or 0) >= 1,
              repr(out))
    # Only a PUBLISH counts as an event (the 1 s poll does not): every shard of A and B heard it.
    deadline = time.monotonic() + PROPAGATION_S
    while heard() < events_before + 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    res.check("O20: the CLI published its revocation: every shard of A and B heard the event",
              heard() >= events_before + 4, "%d → %d" % (events_before, heard()))
    st, _, body = refresh(b.port, first["refresh_token"], client=app)
    res.check("O20: disabled by the admin CLI → invalid_grant", st == 400 and body.get("error") == "invalid_grant",
              "%s %r" % (st, body))
    res.check("O20: disabled by the admin CLI → the access token refused on A and B within the poll",
              everywhere_refused(env, (a.port, b.port), first["access_token"]))


def test_public(res, env, a, b):
    pub = env.client("spa", "--first-party", "--grant", "refresh_token")
    env.sql("UPDATE clients SET secret_sha256 = NULL WHERE client_id = '%s'" % pub["client_id"])
    env.user("pat")
    st, _, body = good_login(env, a.port, "pat", client="spa")
    rt = body.get("refresh_token", "")
    st, _, body = refresh(b.port, rt, client_id=pub["client_id"])
    res.check("public client: refresh with client_id alone → 200", st == 200 and "refresh_token" in body,
              "%s %r" % (st, body))
    st, _, body2 = refresh(b.port, body.get("refresh_token", ""), client_id=env.clients["app"]["client_id"])
    res.check("public client's token presented as a confidential client without secret → 401",
              st == 401, "%s %r" % (st, body2))


def redis_cli(env, *args):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(env.redis_port)] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    return r.stdout.strip()


def test_f05(res, env, a, b):
    """Redis restarted from a snapshot older than a rotation: nothing of the rotation was in it."""
    app = env.clients["app"]
    env.user("felix")
    rt1 = good_login(env, a.port, "felix")[2]["refresh_token"]
    redis_cli(env, "SET", "f05-marker", "before")
    saved = redis_cli(env, "SAVE") == "OK"
    st, _, body = refresh(a.port, rt1, client=app)
    rt2 = body.get("refresh_token", "")
    redis_cli(env, "DEL", "f05-marker")
    sh("tessera_redis_stop '%s'" % env.redis_dir)  # --save "": no snapshot on the way out
    r = sh("tessera_redis_start '%s' %d 0" % (env.redis_dir, env.redis_port))
    res.check("F05: Redis restarted from the snapshot taken before the rotation (setup)",
              saved and st == 200 and r.returncode == 0 and redis_cli(env, "GET", "f05-marker") == "before",
              "%s %s %r" % (saved, st, r.stderr))
    replays = [refresh(port, rt1, client=app) for port in (a.port, b.port)]
    res.check("F05: the spent token replayed on A and B → invalid_grant",
              all(r[0] == 400 and r[2].get("error") == "invalid_grant" for r in replays), repr(replays))
    st, _, body = refresh(b.port, rt2, client=app)
    res.check("F05: ... as reuse: the session is revoked, its successor refused too",
              st == 400 and body.get("error") == "invalid_grant" and
              env.sql("SELECT revoked_at IS NOT NULL FROM sessions WHERE id = '%s'" % sid_of(rt1)) == "t",
              "%s %r" % (st, body))


def test_f08(res, env, a, b):
    app = env.clients["app"]
    env.user("fay")
    rt1 = good_login(env, a.port, "fay")[2]["refresh_token"]
    st, _, body = refresh(a.port, rt1, client=app)
    a.proc.kill()  # SIGKILL right after the acknowledged rotation
    a.proc.wait()
    rt2 = body.get("refresh_token", "")
    restarted = env.server()
    st2, _, body2 = refresh(restarted.port, rt2, client=app)
    res.check("F08: after kill -9 and restart the new token is accepted",
              st == 200 and st2 == 200, "%s %s %r" % (st, st2, body2))
    st3, _, body3 = refresh(restarted.port, rt1, client=app)
    res.check("F08: and the old one refused", st3 == 400 and body3.get("error") == "invalid_grant", repr(body3))
    return restarted


def test_f09(res, env, a):
    """kill -9 after the rotation's commit, its answer never read; the client retries the old
    token on the restarted server. Returns the restarted server."""
    app = env.clients["app"]
    env.user("finn")
    st, _, first = good_login(env, a.port, "finn")
    rt1 = first["refresh_token"]
    res.check("F09: the rotation committed, then the server was killed (-9) before its answer was read",
              lost_refresh(env, a.port, rt1, app, server=a))
    restarted = env.server()
    st, _, body = refresh(restarted.port, rt1, client=app)
    sid = sid_of(rt1)
    res.check("F09: after restart the retried old token → invalid_grant (the family revocation)",
              st == 400 and body.get("error") == "invalid_grant", "%s %r" % (st, body))
    res.check("F09: never two live successors: the session is revoked, audit refresh_reuse_detected present",
              env.sql("SELECT revoked_at IS NOT NULL FROM sessions WHERE id = '%s'" % sid) == "t"
              and env.sql("SELECT count(*) FROM audit_log WHERE action = 'refresh_reuse_detected' "
                          "AND target_id = '%s'" % sid) == "1")
    return restarted


def bearer_post(port, path, token):
    headers = {"Authorization": "Bearer " + token} if token is not None else {}
    return call(port, "POST", "/t/acme/api/v1/auth/%s" % path, b"", headers)


def test_logout(res, env, a, b):
    app = env.clients["app"]
    env.user("lou")
    env.user("max")
    s1, s2, s3 = (good_login(env, a.port, u)[2] for u in ("lou", "lou", "max"))
    ports = (a.port, b.port)
    res.check("logout: the tokens are valid first", all(everywhere_valid(env, ports, s["access_token"])
                                                         for s in (s1, s2, s3)))
    st, headers, _ = bearer_post(a.port, "logout", None)
    res.check("logout without a token → 401 with WWW-Authenticate", st == 401
              and (hdr(headers, "www-authenticate") or "").startswith("Bearer"), repr(st))
    res.check("logout with a bad token → 401", bearer_post(a.port, "logout", "x.y.z")[0] == 401)
    svc = env.clients["svc"]
    _, _, cc = call(a.port, "POST", "/t/acme/oauth2/token", "grant_type=client_credentials",
                    {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(svc)})
    st = bearer_post(a.port, "logout", jbody(cc)["access_token"])[0]
    res.check("logout with a client's own token (no session) → 400", st == 400, repr(st))
    env.sql("UPDATE sessions SET updated_at = now() - interval '1 day' WHERE user_id = '%s'" % env.users["lou"])
    st = bearer_post(b.port, "logout", s1["access_token"])[0]
    res.check("logout: 204", st == 204, repr(st))
    moved = env.sql("SELECT revoked_at IS NOT NULL AND updated_at > now() - interval '1 minute' FROM sessions "
                    "WHERE id = '%s'" % sid_of(s1["refresh_token"]))
    res.check("logout: the session row revoked, its updated_at moved", moved == "t", moved)
    res.check("logout: the session's access token is refused on A and B",
              everywhere_refused(env, ports, s1["access_token"]))
    st, _, body = refresh(a.port, s1["refresh_token"], client=app)
    res.check("O20: refresh after logout → invalid_grant", st == 400 and body.get("error") == "invalid_grant",
              repr(body))
    st, _, s2b = refresh(a.port, s2["refresh_token"], client=app)
    res.check("logout: the user's other session still works", st == 200
              and everywhere_valid(env, ports, s2["access_token"]), repr(s2b))
    st = bearer_post(a.port, "logout-all", s2b["access_token"])[0]
    res.check("logout-all: 204", st == 204, repr(st))
    res.check("logout-all: every access token of the user's sessions refused on A and B",
              everywhere_refused(env, ports, s2["access_token"]) and everywhere_refused(env, ports, s2b["access_token"]))
    st, _, body = refresh(b.port, s2b["refresh_token"], client=app)
    res.check("O20: refresh after logout-all → invalid_grant", st == 400 and body.get("error") == "invalid_grant",
              repr(body))
    open_sessions = env.sql("SELECT count(*) FROM sessions WHERE user_id = '%s' AND revoked_at IS NULL"
                            % env.users["lou"])
    res.check("logout-all: no session of the user is left", open_sessions == "0", open_sessions)
    stale = env.sql("SELECT count(*) FROM sessions WHERE user_id = '%s' AND updated_at < now() - interval '1 minute'"
                    % env.users["lou"])
    res.check("logout-all: every session's updated_at moved", stale == "0", stale)
    st, _, body = refresh(a.port, s3["refresh_token"], client=app)
    res.check("logout-all: another user's session is untouched", st == 200
              and everywhere_valid(env, ports, s3["access_token"]), repr(body))


SKEW_S = 600  # how far behind the "old" server's clock runs: its tokens look 10 minutes old


def server_in_the_past(env):
    """A server whose clock runs SKEW_S behind, so a token it issues carries the iat a token
    issued 10 minutes ago would."""
    return env.server(**faketime_env(FAKETIME="-%d" % SKEW_S))


def test_not_before(res, env, a, b):
    """logout-all is a 'sub' not-before (DESIGN §1's revocation set): one row for the user, and
    'sid' rows only for the sessions active in the margin (store/sql.h)."""
    uid = env.user("nora")
    past = server_in_the_past(env)
    try:
        st, _, old = good_login(env, past.port, "nora")
        res.check("not-before: a token issued 10 minutes ago (by the clock of the server issuing it)",
                  st == 200 and jwt_claims(old["access_token"])["iat"] <= time.time() - SKEW_S + 5, repr(old))
        check_clean_exit(res, past, "the server in the past exits 0 on SIGTERM, no sanitizer report")
    finally:
        past.kill()
    env.sql("UPDATE sessions SET last_seen_at = now() - interval '%d seconds' WHERE id = '%s'"
            % (SKEW_S, sid_of(old["refresh_token"])))
    st, _, fresh = good_login(env, a.port, "nora")
    ports = (a.port, b.port)
    res.check("not-before: both sessions' tokens are valid on A and B first",
              everywhere_valid(env, ports, old["access_token"]) and everywhere_valid(env, ports, fresh["access_token"]))
    st = bearer_post(b.port, "logout-all", fresh["access_token"])[0]
    res.check("not-before: logout-all 204", st == 204, repr(st))
    rows = env.sql("SELECT kind || ':' || value FROM revocations WHERE value IN ('%s', '%s', '%s') ORDER BY kind"
                   % (uid, sid_of(old["refresh_token"]), sid_of(fresh["refresh_token"]))).split()
    res.check("not-before: one 'sub' row for the user, a 'sid' row for the active session only",
              rows == ["sid:" + sid_of(fresh["refresh_token"]), "sub:" + uid], repr(rows))
    res.check("not-before: the idle session's token (no 'sid' row) is refused on every shard of A and B",
              everywhere_refused(env, ports, old["access_token"]))
    res.check("not-before: the active session's token is refused too",
              everywhere_refused(env, ports, fresh["access_token"]))
    st, _, body = refresh(a.port, old["refresh_token"], client=env.clients["app"])
    res.check("not-before: the idle session's refresh token is invalid_grant", st == 400
              and body.get("error") == "invalid_grant", repr(body))
    st, _, after = good_login(env, a.port, "nora")
    res.check("not-before: a login right after logout-all gets a token valid on A and B",
              st == 200 and everywhere_valid(env, ports, after["access_token"]), repr(after))
    restarted = env.server()
    try:
        res.check("not-before: a server started afterwards learns it from Postgres (catch-up)",
                  verify(restarted.port, old["access_token"])[0] == 401
                  and verify(restarted.port, after["access_token"])[0] == 200)
    finally:
        restarted.kill()


def revoke(port, token, client):
    return call(port, "POST", "/t/acme/oauth2/revoke", urllib.parse.urlencode({"token": token}),
                {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(client)})[0]


def test_revoke_refresh(res, env, a, b):
    app, other = env.clients["app"], env.clients["other"]
    env.user("rae")
    s = good_login(env, a.port, "rae")[2]
    st = revoke(a.port, s["refresh_token"], other)
    st2, _, body = refresh(a.port, s["refresh_token"], client=app)
    res.check("O38/RFC 7009: another client revoking the refresh token → 200, nothing changes",
              st == 200 and st2 == 200, "%s %s %r" % (st, st2, body))
    rt, at = body["refresh_token"], body["access_token"]
    res.check("O38/RFC 7009: its own client revokes the refresh token → 200", revoke(b.port, rt, app) == 200)
    st, _, body = refresh(a.port, rt, client=app)
    res.check("O38/RFC 7009: the revoked refresh token → invalid_grant", st == 400
              and body.get("error") == "invalid_grant", repr(body))
    res.check("O38/RFC 7009: the session's access tokens are refused on A and B",
              everywhere_refused(env, (a.port, b.port), at)
              and everywhere_refused(env, (a.port, b.port), s["access_token"]))


def test_o38_access(res, env, a, b):
    """O38, the access-token half: revoking a user's access token writes a 'jti' revocation for
    it, refused everywhere; its session (and so its refresh token) lives on (RFC 7009 §2.1 lets
    the server choose; revoking the refresh token is the way to end the session)."""
    app = env.clients["app"]
    env.user("ola")
    s = good_login(env, a.port, "ola")[2]
    jti = jwt_claims(s["access_token"])["jti"]
    res.check("O38: its own client revokes a user's access token → 200", revoke(a.port, s["access_token"], app) == 200)
    rows = env.sql("SELECT count(*) FROM revocations WHERE kind = 'jti' AND value = '%s'" % jti)
    res.check("O38: ... a 'jti' revocation row for it", rows == "1", repr(rows))
    res.check("O38: ... the token is refused on A and B", everywhere_refused(env, (a.port, b.port), s["access_token"]))
    st, _, body = refresh(b.port, s["refresh_token"], client=app)
    res.check("O38: ... its session lives on: the refresh token still refreshes", st == 200, repr(body))


def test_t03(res, env, a):
    """T03: a refresh token of tenant acme presented at tenant beta, by beta's own client with the
    grant, is invalid_grant, and acme's session is untouched."""
    env.admin("admin", "tenant", "create", "beta")
    env.admin("admin", "keys", "rotate", "--tenant", "beta")
    beta_app = env.admin("admin", "client", "create", "--tenant", "beta", "--name", "app", "--scope", "read write",
                         "--first-party", "--grant", "refresh_token", "--grant", "password")
    env.user("tess")
    rt = good_login(env, a.port, "tess")[2]["refresh_token"]
    form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": rt})
    st, _, data = call(a.port, "POST", "/t/beta/oauth2/token", form,
                       {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(beta_app)})
    res.check("T03: acme's refresh token at beta's token endpoint, by beta's client → 400 invalid_grant",
              st == 400 and jbody(data).get("error") == "invalid_grant", "%s %r" % (st, data[:200]))
    res.check("T03: ... acme's session is untouched", refresh_alive(env, rt))
    st, _, body = refresh(a.port, rt, client=env.clients["app"])
    res.check("T03: ... and its token still refreshes at acme", st == 200, repr(body))


def run_all(res, env):
    a = env.server()
    b = env.server()
    try:
        res.run("O15", test_o15, res, env, a, b)
        res.run("O16", test_o16, res, env, a, b)
        res.run("owner forwarding", test_owner_forwarding, res, env, a)
        res.run("owner serialised", test_owner_serialised, res, env)
        res.run("deleted client", test_deleted_client, res, env, a)
        res.run("stalled connection", test_stalled_connection, res, env)
        res.run("O17", test_o17, res, env, a, b)
        res.run("inline signing", test_inline_signing, res, env, a, b)
        res.run("O18/O19", test_o18_o19, res, env, a, b)
        res.run("O20", test_o20, res, env, a, b)
        res.run("public", test_public, res, env, a, b)
        res.run("logout", test_logout, res, env, a, b)
        res.run("not-before", test_not_before, res, env, a, b)
        res.run("RFC 7009", test_revoke_refresh, res, env, a, b)
        res.run("O38 access token", test_o38_access, res, env, a, b)
        res.run("T03", test_t03, res, env, a)
        res.run("F05", test_f05, res, env, a, b)
        check_clean_exit(res, b, "B exits 0 on SIGTERM, no sanitizer report")
        a2 = test_f08(res, env, a, b)
        a3 = test_f09(res, env, a2)
        check_clean_exit(res, a3, "A (restarted twice) exits 0 on SIGTERM, no sanitizer report")
    finally:
        a.kill()
        b.kill()


def main():
    run_with_env("refresh-token rotation", "refresh", run_all, redis=True)


if __name__ == "__main__":
    main()
