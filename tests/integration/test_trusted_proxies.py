#!/usr/bin/env python3
"""TESSERA_TRUSTED_PROXIES: the client address behind a trusted proxy (proto/http_server.c
http_client_address, proto/http_auth.c http_forwarded_client, core/config.c).

The address Tessera keys its per-address rate-limit bucket on (TESSERA_RATE_ADDRESS_PER_S, 429
with RateLimit-Policy "address") and writes to audit_log.ip and sessions.ip is the TCP peer's,
unless the peer is a trusted proxy: then it is the rightmost X-Forwarded-For entry that is not
itself a trusted proxy. Each server here has an address limit of 1 a second with a burst of one
second (two requests pass at once, then 429 for about a second) and the client and account
limits out of the way; the address bucket is provoked at POST /oauth2/introspect, as in
test_rate_limits.py. The test connects from 127.0.0.1. "Spent" below: requests with that
X-Forwarded-For (or none) were sent until one was answered and the next refused 429 with
RateLimit-Policy "address";q=1;w=1; each check uses fresh documentation addresses
(198.51.100.0/24) so that no bucket carries over from another check.

- Untrusted (TESSERA_TRUSTED_PROXIES unset): X-Forwarded-For is ignored. With 198.51.100.1's
  bucket spent, X-Forwarded-For 198.51.100.2 is 429 "address" too, and so are
  "198.51.100.2, 198.51.100.3" and no X-Forwarded-For at all (one bucket, the peer's).
- Trusted, on a server with TESSERA_TRUSTED_PROXIES=127.0.0.1 and on one with
  "2001:db8::/32, 127.0.0.0/8" (a list, a range), the same checks on each:
  - .1 spent: 198.51.100.2 is answered 200 (its own bucket);
  - spoof: .11 spent, "198.51.100.12, 198.51.100.11" is 429 (the rightmost untrusted is
    the client, whatever the sender put left of it);
  - a trusted hop on the right: .21 spent, "198.51.100.21, 127.0.0.1" is 429 (skipped);
  - 16 entries walked at most: .71 spent, .71 followed by 15 × 127.0.0.1 is 429 (16th entry
    reached); .71 followed by 16 × 127.0.0.1 is 200 (the walk stops at the last trusted entry,
    127.0.0.1, whose bucket is not spent);
  - two X-Forwarded-For fields (raw over a socket): .31 spent, two fields both naming .31 are
    200 (neither is believed); then, with the peer's own bucket spent (requests without
    X-Forwarded-For), two fields naming .32 are 429 "address" (the peer's bucket);
  - an entry that is not a bare address stops the walk: .4 spent (and the peer's bucket left
    to refill), "198.51.100.4:8080" is 200;
    with the peer spent, "198.51.100.5:8080" is 429 (the peer); .41 spent,
    "garbage, 198.51.100.41" is 429 (.41); with the peer spent, "garbage, 198.51.100.42" is
    200 (.42, not the peer);
  - with the peer's bucket spent, a forwarded client 198.51.100.51 is still answered 200;
  - range only: .61 spent, "198.51.100.61, 127.0.0.9" is 429 (127.0.0.9 is in 127.0.0.0/8);
    exact address only: the same is 200 (127.0.0.9 is the client, not trusted).
- audit_log.ip and sessions.ip: a refused login (wrong password, audit action login_failed)
  with X-Forwarded-For 203.0.113.7 writes ip 203.0.113.7 through the trusted server (polled up
  to 5 s) and 127.0.0.1 through the untrusted one; a good login with X-Forwarded-For
  203.0.113.8 makes a session with ip 203.0.113.8 (trusted), 127.0.0.1 (untrusted).
- A bad TESSERA_TRUSTED_PROXIES ("10.0.0.1/8", "nonsense", "127.0.0.1/33", "127.0.0.1:80")
  makes `tessera serve` exit 2 with a message naming TESSERA_TRUSTED_PROXIES.
- Every server exits 0 on SIGTERM with no sanitizer report (check_clean_exit).
Skips when Postgres is not installed.
"""
import os
import subprocess
import time

from tessera_harness import BASE_ENV, SANITIZER_MARKERS, check_clean_exit, exchange, tessera_bin
from test_login import PASSWORD, TENANT, basic, call, hdr, jbody, run_with_env, sid_of

ADDRESS_PER_S = 1
BURST_S = 1
ADDRESS_POLICY = '"address";q=%d;w=1' % ADDRESS_PER_S
RATE_ENV = dict(TESSERA_RATE_ADDRESS_PER_S=ADDRESS_PER_S, TESSERA_RATE_BURST_S=BURST_S)
PEER_REST_S = (BURST_S + 1.0) / ADDRESS_PER_S + 0.2  # a spent bucket full again
SPEND_S = 5.0          # at most this long to see a request answered, then one refused
AUDIT_WAIT_S = 5.0     # audit rows may be written after the answer
PEER = "127.0.0.1"
INTROSPECT = "/t/%s/oauth2/introspect" % TENANT
BODY = "token=not-a-token"
BAD_VALUES = ("10.0.0.1/8", "nonsense", "127.0.0.1/33", "127.0.0.1:80")


def introspect_as(port, client, xff):
    """POST /oauth2/introspect with X-Forwarded-For xff (None: no such field): (status, headers)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(client)}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    status, hdrs, _ = call(port, "POST", INTROSPECT, BODY, headers)
    return status, hdrs


def introspect_two_fields(port, client, first, second):
    """The same request with two X-Forwarded-For fields, sent raw: its status and headers."""
    raw = ("POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: %s\r\n"
           "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
           "X-Forwarded-For: %s\r\nX-Forwarded-For: %s\r\n\r\n%s"
           % (INTROSPECT, basic(client), len(BODY), first, second, BODY)).encode("latin-1")
    resp, _, sock = exchange(port, raw)
    sock.close()
    return resp.status, sorted(resp.headers)


def limited(answer):
    """A 429 of the address bucket."""
    status, headers = answer
    return status == 429 and hdr(headers, "ratelimit-policy") == ADDRESS_POLICY


def spend(port, client, xff):
    """Spends xff's address bucket: requests until one is answered 200 and the next refused 429
    "address", so that the bucket stays spent for about a second from here. True when done."""
    answered = False
    deadline = time.monotonic() + SPEND_S
    while time.monotonic() < deadline:
        answer = introspect_as(port, client, xff)
        if answer[0] == 200:
            answered = True
        elif limited(answer):
            if answered:
                return True
            time.sleep(0.05)  # spent already: wait for a token, so the last refusal is fresh
        else:
            raise RuntimeError("introspect as %r: %r" % (xff, answer))
    return False


def show(answer):
    status, headers = answer
    return "%s RateLimit-Policy %r" % (status, hdr(headers, "ratelimit-policy"))


# ---------------------------------------------------------------------------- the checks

def test_untrusted(res, env, port):
    svc = env.clients["svc"]
    ok = spend(port, svc, "198.51.100.1")
    answer = introspect_as(port, svc, "198.51.100.2")
    res.check("untrusted: .1 spent, X-Forwarded-For 198.51.100.2 is 429 \"address\" too (one bucket, the peer's)",
              ok and limited(answer), show(answer))
    answer = introspect_as(port, svc, "198.51.100.2, 198.51.100.3")
    res.check("untrusted: ... and \"198.51.100.2, 198.51.100.3\" is 429", limited(answer), show(answer))
    answer = introspect_as(port, svc, None)
    res.check("untrusted: ... and no X-Forwarded-For at all is 429", limited(answer), show(answer))


def spent_then(res, port, svc, victim, xff, want_limited, name):
    ok = spend(port, svc, victim)
    answer = introspect_as(port, svc, xff)
    res.check(name, ok and (limited(answer) if want_limited else answer[0] == 200),
              "spent %s: %s; X-Forwarded-For %r: %s" % (victim, ok, xff, show(answer)))


def test_trusted(res, env, port, label, ranged):
    svc = env.clients["svc"]
    spent_then(res, port, svc, "198.51.100.1", "198.51.100.2", False,
               "%s: .1 spent, X-Forwarded-For 198.51.100.2 is answered 200 (its own bucket)" % label)
    spent_then(res, port, svc, "198.51.100.11", "198.51.100.12, 198.51.100.11", True,
               "%s: spoof \"198.51.100.12, 198.51.100.11\" is the rightmost untrusted (.11, spent): 429" % label)
    spent_then(res, port, svc, "198.51.100.21", "198.51.100.21, 127.0.0.1", True,
               "%s: \"198.51.100.21, 127.0.0.1\" skips the trusted hop: .21 (spent), 429" % label)
    spent_then(res, port, svc, "198.51.100.71", ", ".join(["198.51.100.71"] + [PEER] * 15), True,
               "%s: .71 behind 15 trusted hops (16 entries) is still reached: 429" % label)
    spent_then(res, port, svc, "198.51.100.71", ", ".join(["198.51.100.71"] + [PEER] * 16), False,
               "%s: .71 behind 16 trusted hops is past the walk: the client is 127.0.0.1 (not spent), 200"
               % label)
    ok = spend(port, svc, "198.51.100.31")
    answer = introspect_two_fields(port, svc, "198.51.100.31", "198.51.100.31")
    res.check("%s: .31 spent, two X-Forwarded-For fields naming .31 are answered 200 (neither believed)" % label,
              ok and answer[0] == 200, "spent %s; %s" % (ok, show(answer)))
    # The 16-hop and the two-field requests above each took one of the peer's two tokens, and
    # the next request is the peer's too: its bucket full again first.
    time.sleep(PEER_REST_S)
    spent_then(res, port, svc, "198.51.100.4", "198.51.100.4:8080", False,
               "%s: .4 spent, \"198.51.100.4:8080\" (not a bare address) is not .4: 200" % label)
    spent_then(res, port, svc, "198.51.100.41", "garbage, 198.51.100.41", True,
               "%s: \"garbage, 198.51.100.41\" is .41 (spent): 429" % label)
    spent_then(res, port, svc, "198.51.100.61", "198.51.100.61, 127.0.0.9", ranged,
               "%s: \"198.51.100.61, 127.0.0.9\" (.61 spent) is %s" % (
                   label, "429: 127.0.0.9 is in the trusted range" if ranged
                   else "200: 127.0.0.9 is not trusted, so it is the client"))
    # The peer's own bucket spent (requests without X-Forwarded-For), then at once:
    ok = spend(port, svc, None)
    answers = [introspect_two_fields(port, svc, "198.51.100.32", "198.51.100.32"),
               introspect_as(port, svc, "198.51.100.5:8080"),
               introspect_as(port, svc, "garbage, 198.51.100.42"),
               introspect_as(port, svc, "198.51.100.51")]
    res.check("%s: peer spent: two X-Forwarded-For fields are the peer's: 429 \"address\"" % label,
              ok and limited(answers[0]), "spent %s; %s" % (ok, show(answers[0])))
    res.check("%s: peer spent: \"198.51.100.5:8080\" is the peer: 429" % label,
              ok and limited(answers[1]), show(answers[1]))
    res.check("%s: peer spent: \"garbage, 198.51.100.42\" is .42, not the peer: 200" % label,
              ok and answers[2][0] == 200, show(answers[2]))
    res.check("%s: peer spent: a forwarded client 198.51.100.51 is still answered 200" % label,
              ok and answers[3][0] == 200, show(answers[3]))


def poll_sql(env, statement, want, seconds=AUDIT_WAIT_S):
    deadline = time.monotonic() + seconds
    while True:
        got = env.sql(statement)
        if got == want or time.monotonic() >= deadline:
            return got
        time.sleep(0.1)


def test_recorded_ip(res, env, port, label, username, want):
    """A refused and a good login with X-Forwarded-For: the address in audit_log and sessions."""
    uid = env.user(username)
    app = env.clients["app"]["client_id"]
    headers = {"Content-Type": "application/json", "User-Agent": "test-agent/1.0"}
    path = "/t/%s/api/v1/auth/login" % TENANT
    body = '{"username": "%s", "password": "not the password", "client_id": "%s"}' % (username, app)
    status = call(port, "POST", path, body, dict(headers, **{"X-Forwarded-For": "203.0.113.7"}))[0]
    got = poll_sql(env, "SELECT string_agg(host(ip), ',') FROM audit_log WHERE action = 'login_failed' "
                   "AND actor_id = '%s'" % uid, want[0])
    res.check("%s: a refused login with X-Forwarded-For 203.0.113.7: 401, audit login_failed ip %s"
              % (label, want[0]), status == 401 and got == want[0], "%s, ip %r" % (status, got))
    body = '{"username": "%s", "password": "%s", "client_id": "%s"}' % (username, PASSWORD, app)
    status, _, data = call(port, "POST", path, body, dict(headers, **{"X-Forwarded-For": "203.0.113.8"}))
    refresh = jbody(data).get("refresh_token", "")
    got = env.sql("SELECT host(ip) FROM sessions WHERE id = '%s'" % sid_of(refresh)) if status == 200 else ""
    res.check("%s: a good login with X-Forwarded-For 203.0.113.8: its session's ip is %s" % (label, want[1]),
              status == 200 and got == want[1], "%s, ip %r" % (status, got))


def test_bad_config(res, env):
    for value in BAD_VALUES:
        penv = dict(os.environ, **BASE_ENV)
        penv.update(TESSERA_PG_URL=env.pg.url, TESSERA_MASTER_KEY_FILE=env.key, TESSERA_TRUSTED_PROXIES=value)
        proc = subprocess.Popen([tessera_bin(), "serve"], env=penv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        text = err.decode("utf-8", "replace")
        report = any(m in text for m in SANITIZER_MARKERS)
        res.check("TESSERA_TRUSTED_PROXIES=%r: the server refuses to start (exit 2, the variable named)" % value,
                  proc.returncode == 2 and "TESSERA_TRUSTED_PROXIES" in text and not report,
                  "exit %r, stderr %r" % (proc.returncode, text[-600:]))


def run_all(res, env):
    res.run("bad config", test_bad_config, res, env)
    srv = env.server(**RATE_ENV)
    try:
        res.run("untrusted: recorded ip", test_recorded_ip, res, env, srv.port, "untrusted", "direct",
                (PEER, PEER))
        time.sleep(PEER_REST_S)  # the peer's bucket full again
        res.run("untrusted", test_untrusted, res, env, srv.port)
        check_clean_exit(res, srv, "untrusted: server exits 0 on SIGTERM, no sanitizer report")
    finally:
        srv.kill()
    for label, proxies, ranged in (("trusted 127.0.0.1", "127.0.0.1", False),
                                   ("trusted range", "2001:db8::/32, 127.0.0.0/8", True)):
        srv = env.server(TESSERA_TRUSTED_PROXIES=proxies, **RATE_ENV)
        try:
            res.run(label, test_trusted, res, env, srv.port, label, ranged)
            if not ranged:
                res.run(label + ": recorded ip", test_recorded_ip, res, env, srv.port, label, "forwarded",
                        ("203.0.113.7", "203.0.113.8"))
            check_clean_exit(res, srv, "%s: server exits 0 on SIGTERM, no sanitizer report" % label)
        finally:
            srv.kill()


def main():
    run_with_env("trusted proxies", "trusted proxies", run_all)


if __name__ == "__main__":
    main()
