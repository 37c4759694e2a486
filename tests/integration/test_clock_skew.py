#!/usr/bin/env python3
"""Instances whose wall clocks disagree, and a wall clock stepped under a running instance
(SECURITY F13; RFC 7519 §4.1.4; issues 5 and 6).

Starts its own Postgres cluster and a reference instance A on the true clock; the other
instances get their wall clock from libfaketime (its monotonic clock left alone), all on the
one Postgres:
- cross-instance tokens within the leeway (crypto/jwt.h JWT_LEEWAY_DEFAULT_S, 60 s) are
  accepted, beyond it refused: A accepts the tokens of an instance 30 s ahead and, for 60 s
  tokens, of one 30 s behind; A refuses the tokens of an instance 2 min ahead (iat from the
  future) and the 60 s tokens of one 2 min behind (expired); the instance 2 min ahead accepts
  A's tokens; /verify and introspection agree every time;
- a wall-clock step under a running instance (FAKETIME_TIMESTAMP_FILE) moves its Date header
  but none of its windows:
  - rate limits run on CLOCK_MONOTONIC (auth/ratelimit.c): a per-account bucket spent before
    a step of +1 hour is still spent after it (429), where a wall-clock bucket would have
    refilled;
  - lockout windows are Postgres' (STORE_LOGIN_FAILED's now()): an account locked (its wait
    then set to 6 s) before a step of -1 hour refuses the right password during the wait and
    lets it in once the wait passed, where a lock judged on the stepped clock would last an
    hour longer.
Skips when Postgres (initdb) is not installed.
"""
import email.utils
import json
import time
import urllib.parse

from tessera_harness import check_clean_exit, faketime_env
from test_login import TENANT, basic, call, good_login, introspect, jbody, login, run_with_env, verify

LEEWAY_S = 60               # crypto/jwt.h JWT_LEEWAY_DEFAULT_S
SKEW_WITHIN_S = 30          # an instance this far off: inside the leeway
SKEW_BEYOND_S = 120         # SECURITY F13's two minutes: beyond it
SHORT_LIFETIME_S = 60       # the 'short' client's tokens: one issued 2 min behind is expired for A
STEP_S = 3600               # the wall-clock step under a running instance
CACHE_S = 1                 # FAKETIME_CACHE_DURATION: the instance reads the step within about 2 s
STEP_SEEN_S = 10.0          # ... and this bounds the wait for it
DATE_SLACK_S = 30           # the Date header vs the expected offset (whole seconds, a slow machine)
LOCK_THRESHOLD = 10         # auth/auth_int.h AUTH_LOCKOUT_THRESHOLD
LOCK_S = 6                  # the lock's wait, set by SQL: long enough to be seen across a step
RATE_BURST = 3              # the stepped tenant's per-account bucket: 4 tries at once ...
RATE_PER_MIN = 1            # ... then one a minute, so a refill within the test is the step's doing
STEP_TENANT = "stepped"


def issue(port, client):
    form = urllib.parse.urlencode({"grant_type": "client_credentials"})
    status, _, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, form,
                           {"Content-Type": "application/x-www-form-urlencoded",
                            "Authorization": basic(client)})
    body = jbody(data)
    if status != 200:
        raise RuntimeError("token: %s %r" % (status, body))
    return body["access_token"]


def judged(env, port, token):
    """'accepted', 'refused', or what /verify and introspection said when they disagree."""
    v = verify(port, token)[0]
    active = introspect(port, token, env.clients["svc"])[1].get("active")
    if v == 200 and active is True:
        return "accepted"
    if v == 401 and active is False:
        return "refused"
    return "verify %s, active %r" % (v, active)


def skewed(env, seconds):
    return env.server(TESSERA_SHARDS=1, **faketime_env(FAKETIME="%+d" % seconds))


def test_cross_instance(res, env):
    env.client("short", "--grant", "client_credentials")
    env.sql("UPDATE clients SET token_lifetime_s = %d WHERE client_id = '%s'"
            % (SHORT_LIFETIME_S, env.clients["short"]["client_id"]))
    a = env.server()
    try:
        cases = ((SKEW_WITHIN_S, "svc", "accepted", "30 s ahead: its tokens accepted by A (within the leeway)"),
                 (-SKEW_WITHIN_S, "short", "accepted", "30 s behind: its 60 s tokens accepted by A"),
                 (SKEW_BEYOND_S, "svc", "refused", "2 min ahead: its tokens refused by A (iat beyond the leeway)"),
                 (-SKEW_BEYOND_S, "short", "refused", "2 min behind: its 60 s tokens refused by A (expired "
                                                      "beyond the leeway)"))
        for skew, client, want, label in cases:
            other = skewed(env, skew)
            try:
                token = issue(other.port, env.clients[client])
                got = judged(env, a.port, token)
                res.check("F13: an instance %s" % label, got == want, got)
                if skew == SKEW_BEYOND_S:
                    got = judged(env, other.port, issue(a.port, env.clients["svc"]))
                    res.check("F13: ... and that instance accepts A's tokens", got == "accepted", got)
            finally:
                check_clean_exit(res, other, "F13: the instance %+d s exits 0, no sanitizer report" % skew)
    finally:
        check_clean_exit(res, a, "F13: A exits 0, no sanitizer report")


def step_clock(port, path, seconds):
    """Steps the instance's wall clock to seconds off the true one; True once its Date header
    shows it."""
    with open(path, "w") as f:
        f.write("%+d\n" % seconds)
    deadline = time.monotonic() + STEP_SEEN_S
    while time.monotonic() < deadline:
        offset = date_offset(port)
        if offset is not None and abs(offset - seconds) < DATE_SLACK_S:
            return True
        time.sleep(0.1)
    return False


def date_offset(port):
    """The instance's Date header minus this machine's clock, in seconds."""
    _, headers, _ = call(port, "GET", "/health/live")
    for name, value in headers:
        if name.lower() == "date":
            return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    return None


def test_clock_step(res, env):
    stamp = "%s/faketime" % env.workdir
    with open(stamp, "w") as f:
        f.write("+0\n")
    app = env.clients["app"]["client_id"]
    env.admin("admin", "tenant", "create", STEP_TENANT)
    env.admin("admin", "keys", "rotate", "--tenant", STEP_TENANT)
    env.sql("UPDATE tenants SET settings = '%s' WHERE slug = '%s'"
            % (json.dumps({"rate_limit": {"account_per_min": RATE_PER_MIN, "account_burst": RATE_BURST}}),
               STEP_TENANT))
    stepped_app = env.admin("admin", "client", "create", "--tenant", STEP_TENANT, "--name", "app", "--scope",
                            "read", "--first-party", "--grant", "password")["client_id"]
    env.user("stepper")
    srv = env.server(**faketime_env(FAKETIME_TIMESTAMP_FILE=stamp, FAKETIME_CACHE_DURATION=CACHE_S))
    try:
        port = srv.port
        tries = [login(port, {"username": "nobody-f13", "password": "guess", "client_id": stepped_app},
                       tenant=STEP_TENANT)[0] for _ in range(RATE_BURST + 2)]
        res.check("F13: a per-account bucket spent: 401s, then 429 (setup)",
                  tries[:RATE_BURST + 1] == [401] * (RATE_BURST + 1) and tries[-1] == 429, repr(tries))
        res.check("F13: the instance's wall clock stepped 1 hour ahead (its Date header)",
                  step_clock(port, stamp, STEP_S))
        st = login(port, {"username": "nobody-f13", "password": "guess", "client_id": stepped_app},
                   tenant=STEP_TENANT)[0]
        res.check("F13: after the step the bucket is still spent: 429 (rate limits on CLOCK_MONOTONIC)",
                  st == 429, repr(st))
        res.check("F13: ... and back (setup)", step_clock(port, stamp, 0))
        for i in range(LOCK_THRESHOLD):
            login(port, {"username": "stepper", "password": "guess %d" % i, "client_id": app})
        locked = env.counted(port, "SELECT locked_until > now() FROM users WHERE username = 'stepper'")
        env.sql("UPDATE users SET locked_until = now() + interval '%d seconds' WHERE username = 'stepper'"
                % LOCK_S)
        lock_ends = time.monotonic() + LOCK_S
        res.check("F13: %d failures lock the account (setup; its wait then set to %d s)" % (LOCK_THRESHOLD, LOCK_S),
                  locked == "t", locked)
        res.check("F13: the instance's wall clock stepped 1 hour back", step_clock(port, stamp, -STEP_S))
        refused = good_login(env, port, "stepper")[0]
        time.sleep(max(0.0, lock_ends - time.monotonic()) + 0.5)
        st = good_login(env, port, "stepper")[0]
        res.check("F13: a step of -1 hour neither ends nor extends the lockout: refused during the "
                  "wait, 200 once it passed", refused == 401 and st == 200, "%s %s" % (refused, st))
    finally:
        check_clean_exit(res, srv, "F13: the stepped instance exits 0, no sanitizer report")


def run_all(res, env):
    res.run("F13 cross-instance", test_cross_instance, res, env)
    res.run("F13 clock step", test_clock_step, res, env)


def main():
    run_with_env('clock skew', 'clock skew', run_all)


if __name__ == "__main__":
    main()
