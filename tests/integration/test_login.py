#!/usr/bin/env python3
"""Password login, POST /t/{tenant}/api/v1/auth/login (issue 6; DESIGN §4; SECURITY P01,
P03, P04, P08, P09, P10, P12, P13).

Starts its own Postgres cluster and one Tessera instance (two shards); users are made with
`tessera admin user create` (Argon2id), imported bcrypt hashes are written into the row by
SQL (made with `htpasswd -nbB` for $2y$ and Python's crypt module for $2b$; $2a$ is the same
algorithm with the older prefix). Every issued token is checked with the server's own
/verify and introspection, and against the rows the login committed:
- a login answers 200 {access_token, token_type Bearer, expires_in, refresh_token} with
  no-store; the JWT carries sub = the user's id, sid = the session in the refresh token,
  client_id, tid, the client's scopes; the session row holds only the refresh token's
  SHA-256, the address, the User-Agent, expiry now+14 d and cap now+30 d; the user's
  failed_logins is 0 and last_login_at set; an audit row login_succeeded names the session;
- P13: two logins give two sessions and two refresh tokens;
- P01: unknown user, wrong password, disabled user, unknown email, an email two users share:
  the same status, body and headers (X-Request-Id and Date aside); refusals are audited;
- P08/P09: a 4 KiB password, an empty one, one holding NUL: 400, nothing counted; 1 MiB: 413;
- P10: $2y$, $2b$, $2a$ users log in and their rows hold $argon2id$ afterwards; the new
  hash works; a wrong password on a bcrypt user is 401;
- P12: an Argon2id row with m = 4 GiB or t = 1000: 401, the server stays up;
- P01, a refusal answered before its failure commits: with the user's row locked by another
  transaction a wrong password is 401 at once, its statement waits (pending 1, nothing
  committed), then commits when the lock goes (count 1, audit login_failed); held past the
  statement's budget it is lost and counted lost; a SIGTERM meanwhile waits for it (the server
  is still up while the row is locked) and exits 0 once it committed;
- P03/P04: 10 failures lock the account (audit locked_out); during the wait even the right
  password gets the wrong-password answer and does not lengthen the wait; after the first
  wait (2 s) the right password works and the count is reset; after the threshold the next
  failure waits twice as long;
- a client that is not first-party, or unknown, or missing: 400;
- the token endpoint's password grant (RFC 6749 §4.3, first-party clients only): 200 with a
  refresh token for the right password, and the token refreshes; wrong password and unknown
  user both 400 invalid_grant with the same body (P01); a client without the grant or not
  first-party 400 unauthorized_client, a wrong secret 401 invalid_client, a wider scope
  invalid_scope, a narrower one granted;
- F15: one worker thread and a flood of FLOOD logins at once: the ones the full worker
  queue refuses answer 503 with Retry-After, every other one 200/401; /verify answers 200
  meanwhile; sessions exist exactly for the 200s (none half-created by a 503);
- P06 (RFC 8265 §3.3): a user created as "Bob-P06" is stored "bob-p06" and logs in as
  "BOB-P06", " bob-p06 " and fullwidth "ｂｏｂ－ｐ０６" (one sub), at /auth/login and by the
  password grant; Cyrillic-о "bоb-p06" and "bob p06" get the unknown user's 401 (not a 400);
- P07 (RFC 8265 §4.2): a password set as NFD logs in typed as NFC and as NFD; non-ASCII
  spaces are spaces; a control character in a login password is the wrong password's 401,
  same headers and body; invalid UTF-8 is a malformed JSON body (400, the same for every
  name, nothing counted) and, in a password grant's form, the wrong password's
  invalid_grant; an imported bcrypt hash of NFD bytes verifies the
  raw bytes only (NFC refused), then is rehashed from the normalised password (NFC works);
- P05, on a server with the default per-account limit (30 a minute, burst 10): 11 tries at
  one unknown name, then 429 with Retry-After and RateLimit-Policy "account";q=30;w=60; the
  same for a known name with the same answer (no enumeration); case and width variants
  share the bucket, and so does the token endpoint's password grant; tries spread over 16
  source addresses are stopped the same; other names from the same address are not; a
  tenant's settings.rate_limit turns it off (account_per_min 0) or tightens it.
Every other server here runs with TESSERA_RATE_ACCOUNT_PER_MIN=0 (the lockout and flood
checks log in to one account many times a second).
Skips when Postgres (initdb) is not installed.
"""
import base64
import hashlib
import http.client
import json
import os
import socket
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import warnings

with warnings.catch_warnings():  # crypt leaves Python in 3.13; Debian 12 has 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

from tessera_harness import Results, Server, check_clean_exit, login_failures_settled, metric, tessera_bin
from test_store_faults import Postgres, sh

TENANT = "acme"
PASSWORD = "correct horse battery staple"
FAST_RATE = 10000000         # rate limits out of the way
ACCOUNT_PER_MIN = 30         # core/config.c TESSERA_RATE_ACCOUNT_PER_MIN's default (SECURITY P05)
ACCOUNT_BURST = 10           # auth/auth_int.h AUTH_RATE_ACCOUNT_BURST: burst + 1 tries at once
P05_TRIES = 16               # more than the burst allows at once
P05_ADDRESSES = 16           # 127.0.0.2 .. 127.0.0.17: loopback answers for all of 127/8
LOCK_THRESHOLD = 10          # auth/auth_int.h AUTH_LOCKOUT_THRESHOLD
LOCK_FIRST_WAIT_S = 2        # auth/auth_int.h AUTH_LOCKOUT_FIRST_WAIT_S
IDLE_S = 14 * 86400          # auth/auth_int.h AUTH_SESSION_IDLE_S
ABSOLUTE_S = 30 * 86400      # auth/auth_int.h AUTH_SESSION_ABSOLUTE_S
CLOCK_SLACK_S = 120          # database clock vs the expected expiry, and a slow sanitizer build
VOLATILE_HEADERS = ("x-request-id", "date")
FLOOD = 1300                 # logins at once: more than the worker queue's 1,024 jobs
FLOOD_VALID_EVERY = 50       # every fiftieth is a real user's right password (a session)
FLOOD_ARGON2_M_KIB = 4096    # cheap hashes: one worker drains 1,024 of them in seconds, yet
                             # slower than they arrive
FLOOD_READ_S = 300           # a socket's wait for its answer: the whole queue on a slow machine
FLOOD_IDLE_MS = FLOOD_READ_S * 1000
SHED_LOGINS = 120            # logins at once, one worker, default Argon2id (25 ms each in a Release
                             # build, 60-150 ms under ASan): 3 s of work at the least
SHED_IDLE_MS = 1000          # the parked request's backstop: the queue's tail is answered 503 by it
SHED_SETTLE_S = 2.0          # after the last answer: the job running at the deadline finishes
SHED_EDGE = 2                # sessions committing in the moment their request's backstop fired


# ---------------------------------------------------------------------------- HTTP helpers

def call(port, method, path, body=None, headers=None, timeout=30.0, source=None):
    """(status, headers as a sorted list of (lower name, value), body bytes); source: the
    local address to connect from."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, sorted((k.lower(), v) for k, v in resp.getheaders()), data
    finally:
        conn.close()


def hdr(headers, name):
    for k, v in headers:
        if k == name:
            return v
    return None


def login(port, body, tenant=TENANT, agent="test-agent/1.0", raw=None, source=None):
    data = raw if raw is not None else json.dumps(body).encode()
    return call(port, "POST", "/t/%s/api/v1/auth/login" % tenant, data,
                {"Content-Type": "application/json", "User-Agent": agent}, source=source)


def jbody(data):
    try:
        return json.loads(data)
    except ValueError:
        return {}


def jwt_claims(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def sid_of(refresh):
    return refresh[3:39]


def basic(client):
    pair = "%s:%s" % (client["client_id"], client["client_secret"])
    return "Basic " + base64.b64encode(pair.encode()).decode()


def verify(port, token, tenant=TENANT):
    return call(port, "GET", "/t/%s/verify" % tenant, headers={"Authorization": "Bearer " + token})


def introspect(port, token, client, tenant=TENANT):
    status, _, data = call(port, "POST", "/t/%s/oauth2/introspect" % tenant,
                           urllib.parse.urlencode({"token": token}),
                           {"Content-Type": "application/x-www-form-urlencoded",
                            "Authorization": basic(client)})
    return status, jbody(data)


# ---------------------------------------------------------------------------- environment

class Env:
    """A private Postgres, the master key, the admin CLI, optionally Redis."""

    def __init__(self, workdir, redis=False):
        self.workdir = workdir
        self.pg = Postgres(workdir)
        self.key = os.path.join(workdir, "master.key")
        self.clients = {}
        self.users = {}
        self.redis_port = None
        self.redis_dir = os.path.join(workdir, "redis")
        self.want_redis = redis

    def admin(self, *args, stdin=None):
        env = dict(os.environ, TESSERA_PG_URL=self.pg.url, TESSERA_MASTER_KEY_FILE=self.key)
        if self.redis_port:  # the CLI publishes its revocations there, as a server does
            env["TESSERA_REDIS_URL"] = "redis://127.0.0.1:%d" % self.redis_port
        r = subprocess.run([tessera_bin()] + list(args), env=env, input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("tessera %s: %s" % (" ".join(args), r.stderr.decode()))
        return json.loads(r.stdout) if r.stdout.strip() else None

    def sql(self, statement):
        return self.pg.psql(statement)

    def counted(self, port, statement):
        """statement once every refusal so far has its failure committed: a refusal is answered
        before that (auth/login_failure.c)."""
        if not login_failures_settled(port):
            raise RuntimeError("refused logins' failures still in flight")
        return self.sql(statement)

    def prepare(self):
        with open(self.key, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(self.key, 0o600)
        self.pg.init()
        self.admin("migrate")
        self.admin("admin", "tenant", "create", TENANT)
        self.admin("admin", "keys", "rotate", "--tenant", TENANT)
        self.client("app", "--first-party", "--grant", "refresh_token", "--grant", "password")
        self.client("other", "--first-party", "--grant", "refresh_token")
        self.client("svc", "--grant", "client_credentials", "--introspect")
        if self.want_redis:
            from test_store_faults import free_port
            self.redis_port = free_port()
            r = sh("tessera_redis_start '%s' %d 0" % (self.redis_dir, self.redis_port))
            if r.returncode != 0:
                raise RuntimeError("redis: " + r.stderr.decode())

    def client(self, name, *flags):
        self.clients[name] = self.admin("admin", "client", "create", "--tenant", TENANT, "--name", name,
                                        "--scope", "read write", *flags)
        return self.clients[name]

    def user(self, name, password=PASSWORD, email=None):
        args = ["admin", "user", "create", "--tenant", TENANT, "--username", name, "--password-stdin"]
        if email:
            args += ["--email", email]
        self.users[name] = self.admin(*args, stdin=(password + "\n").encode())["id"]
        return self.users[name]

    def server(self, **extra):
        env = dict(TESSERA_SHARDS=2, TESSERA_PG_URL=self.pg.url, TESSERA_MASTER_KEY_FILE=self.key,
                   TESSERA_RATE_CLIENT_PER_S=FAST_RATE, TESSERA_RATE_ADDRESS_PER_S=FAST_RATE,
                   TESSERA_RATE_ACCOUNT_PER_MIN=0)
        if self.redis_port:
            env["TESSERA_REDIS_URL"] = "redis://127.0.0.1:%d" % self.redis_port
        env.update(extra)
        srv = Server(**{k: v for k, v in env.items() if v is not None})
        for k in [k for k, v in env.items() if v is None]:
            srv.env.pop(k, None)  # None: the server's own default, whatever this environment says
        srv.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(call(srv.port, "GET", "/health/ready")[0] == 200 for _ in range(4)):
                return srv
            time.sleep(0.1)
        raise RuntimeError("server not ready")

    def stop(self):
        if self.redis_port:
            sh("tessera_redis_stop '%s'" % self.redis_dir)
        self.pg.stop("fast")


def run_with_env(title, name, fn, redis=False, tools=()):
    """A test file's usual main(): skip (77) without Postgres or one of tools (redis-server
    too with redis); a private cluster prepared (Env); fn(res, env) run as one named block;
    the cluster stopped; the results reported."""
    res = Results(title)
    missing = [t for t in tuple(tools) + (("redis-server",) if redis else ()) if not shutil.which(t)]
    if sh("tessera_pg_bindir").returncode != 0 or missing:
        print("SKIP: not installed: %s" % ", ".join(missing or ["Postgres"]))
        raise SystemExit(77)
    with tempfile.TemporaryDirectory() as workdir:
        env = Env(workdir, redis=redis)
        try:
            env.prepare()
            res.run(name, fn, res, env)
        finally:
            env.stop()
    res.finish()


def good_login(env, port, username, client="app", agent="test-agent/1.0"):
    status, headers, data = login(port, {"username": username, "password": PASSWORD,
                                         "client_id": env.clients[client]["client_id"]}, agent=agent)
    return status, headers, jbody(data)


# ---------------------------------------------------------------------------- the checks

def test_success(res, env, port):
    uid = env.user("alice", email="alice@example.test")
    status, headers, body = good_login(env, port, "alice", agent="Mozilla/5.0 (test)")
    res.check("login: 200", status == 200, "%s %r" % (status, body))
    res.check("login: exactly access_token, token_type, expires_in, refresh_token",
              sorted(body) == ["access_token", "expires_in", "refresh_token", "token_type"], repr(body))
    res.check("login: Bearer, no-store", body.get("token_type") == "Bearer"
              and hdr(headers, "cache-control") == "no-store", repr(headers))
    rt = body.get("refresh_token", "")
    res.check("login: refresh token rt_<session id>.<43 base64url>",
              rt.startswith("rt_") and len(rt) == 3 + 36 + 1 + 43 and rt[39] == ".", rt)
    claims = jwt_claims(body["access_token"])
    tenant_id = env.sql("SELECT id FROM tenants WHERE slug = '%s'" % TENANT)
    res.check("login: JWT sub = user id, sid = session, client_id, tid, scope, exp-iat = expires_in",
              claims.get("sub") == uid and claims.get("sid") == sid_of(rt)
              and claims.get("client_id") == env.clients["app"]["client_id"]
              and claims.get("tid") == tenant_id and sorted(claims.get("scope", "").split()) == ["read", "write"]
              and claims["exp"] - claims["iat"] == body.get("expires_in"), repr(claims))
    vs, vh, _ = verify(port, body["access_token"])
    res.check("login: /verify 200 with X-Auth-Subject = user id",
              vs == 200 and hdr(vh, "x-auth-subject") == uid, "%s %r" % (vs, vh))
    ist, ib = introspect(port, body["access_token"], env.clients["svc"])
    res.check("login: introspection active, sub = user id", ist == 200 and ib.get("active") is True
              and ib.get("sub") == uid, repr(ib))
    sha = hashlib.sha256(rt.encode()).hexdigest()
    row = env.sql("SELECT encode(refresh_sha256, 'hex'), user_agent, host(ip), "
                  "extract(epoch FROM expires_at - now())::bigint, "
                  "extract(epoch FROM absolute_expires_at - now())::bigint, user_id, revoked_at IS NULL "
                  "FROM sessions WHERE id = '%s'" % sid_of(rt)).split("|")
    res.check("login: session row holds the SHA-256 only, agent, address, 14 d / 30 d",
              row[0] == sha and row[1] == "Mozilla/5.0 (test)" and row[2] == "127.0.0.1"
              and abs(int(row[3]) - IDLE_S) < CLOCK_SLACK_S and abs(int(row[4]) - ABSOLUTE_S) < CLOCK_SLACK_S
              and row[5] == uid and row[6] == "t", repr(row))
    user = env.sql("SELECT failed_logins, last_login_at IS NOT NULL FROM users WHERE id = '%s'" % uid)
    res.check("login: failed_logins 0, last_login_at set", user == "0|t", user)
    audit = env.sql("SELECT count(*) FROM audit_log WHERE action = 'login_succeeded' AND actor_id = '%s' "
                    "AND target_id = '%s'" % (uid, sid_of(rt)))
    res.check("login: audit login_succeeded names the session", audit == "1", audit)
    status, _, body = login(port, {"email": "ALICE@example.test", "password": PASSWORD,
                                   "client_id": env.clients["app"]["client_id"]})
    res.check("login by email (case-insensitive): 200", status == 200, repr(status))


def test_p13(res, env, port):
    s1, _, b1 = good_login(env, port, "alice")
    s2, _, b2 = good_login(env, port, "alice")
    res.check("P13: each login makes a new session id and refresh token",
              s1 == s2 == 200 and sid_of(b1["refresh_token"]) != sid_of(b2["refresh_token"])
              and b1["refresh_token"] != b2["refresh_token"], "%s %s" % (s1, s2))


def refusal(resp):
    status, headers, data = resp
    return status, [h for h in headers if h[0] not in VOLATILE_HEADERS], data


def test_p01(res, env, port):
    env.user("bob")
    env.user("carol")
    env.admin("admin", "user", "disable", "--tenant", TENANT, "--username", "carol")
    app = env.clients["app"]["client_id"]
    wrong = refusal(login(port, {"username": "bob", "password": "not the password", "client_id": app}))
    unknown = refusal(login(port, {"username": "nobody-here", "password": "not the password", "client_id": app}))
    disabled = refusal(login(port, {"username": "carol", "password": PASSWORD, "client_id": app}))
    no_mail = refusal(login(port, {"email": "x@nowhere.test", "password": PASSWORD, "client_id": app}))
    res.check("P01: wrong password is 401", wrong[0] == 401, repr(wrong))
    res.check("P01: unknown user: same status, headers and body as a wrong password", unknown == wrong,
              "%r\n%r" % (unknown, wrong))
    res.check("P01: disabled user: the same answer", disabled == wrong, repr(disabled))
    res.check("P01: unknown email: the same answer", no_mail == wrong, repr(no_mail))
    env.user("dave", email="dave@example.test")
    try:
        env.user("erin", email="DAVE@example.test")
        second = True
    except RuntimeError:
        second = False
    res.check("a second account with the same address (another case) is refused", not second)
    audit = env.counted(port, "SELECT count(*) FROM audit_log WHERE action = 'login_failed' "
                        "AND details->>'reason' = 'unknown_user'")
    res.check("P01: refusals of unknown users are audited", int(audit) >= 3, audit)
    n = env.sql("SELECT failed_logins FROM users WHERE id = '%s'" % env.users["bob"])
    res.check("P01: the wrong password was counted", n == "1", n)


FAILURE_BUDGET_MS = 3000     # the detached-failure server's statement budget (TESSERA_PG_QUERY_TIMEOUT_MS)
PAST_BUDGET_S = 4.5          # a row lock held this long outlasts the budget
HELD_S = 0.5                 # ... and this long does not


class RowLock:
    """Another transaction holding one user's row lock (FOR UPDATE) until release()."""

    def __init__(self, env, uid):
        self.proc = subprocess.Popen(["psql", env.pg.url, "-X", "-qAt"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write("BEGIN;\nSELECT 'held' FROM users WHERE id = '%s' FOR UPDATE;\n" % uid)
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "held":
            raise RuntimeError("could not lock the row")

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("COMMIT;\n")
            self.proc.stdin.close()
            self.proc.wait(30)


def failures(env, uid):
    return env.sql("SELECT failed_logins || '|' || (SELECT count(*) FROM audit_log WHERE action = "
                   "'login_failed' AND actor_id = '%s') FROM users WHERE id = '%s'" % (uid, uid))


def test_refusal_first(res, env):
    """P01: no refusal waits on the write only a known user's has; the write still happens."""
    uid = env.user("rowlocked")
    app = env.clients["app"]["client_id"]
    wrong = {"username": "rowlocked", "password": "not the password", "client_id": app}
    srv = env.server(TESSERA_PG_QUERY_TIMEOUT_MS=FAILURE_BUDGET_MS)
    port = srv.port
    lost0 = metric(port, 'tessera_login_failures_total{outcome="lost"}')
    lock = RowLock(env, uid)
    try:
        st = login(port, wrong)[0]
        pending = metric(port, "tessera_login_failures_pending")
        res.check("P01: the user's row locked elsewhere: a wrong password is still 401 at once, its "
                  "failure's statement waiting", st == 401 and pending == 1, "%s, pending %s" % (st, pending))
        res.check("... nothing committed while the row is locked", failures(env, uid) == "0|0", failures(env, uid))
        time.sleep(HELD_S)
    finally:
        lock.release()
    res.check("... committed once the lock goes: count 1, audit login_failed",
              login_failures_settled(port) and failures(env, uid) == "1|1", failures(env, uid))
    lock = RowLock(env, uid)
    try:
        st = login(port, wrong)[0]
        time.sleep(PAST_BUDGET_S)
    finally:
        lock.release()
    lost = metric(port, 'tessera_login_failures_total{outcome="lost"}')
    res.check("held past the statement's budget: 401, the failure lost, counted and logged",
              st == 401 and login_failures_settled(port) and lost == lost0 + 1 and failures(env, uid) == "1|1" and
              "a refused login's failure was not recorded" in srv.stderr_text(),
              "%s, lost %s, %s" % (st, lost, failures(env, uid)))
    lock = RowLock(env, uid)
    try:
        st = login(port, wrong)[0]
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(HELD_S)
        res.check("SIGTERM with a refusal's failure in flight: the server waits for it",
                  st == 401 and srv.alive(), repr(st))
    finally:
        lock.release()
    check_clean_exit(res, srv, "... then exits 0 once it committed, no sanitizer report")
    res.check("... and the failure committed: count 2", failures(env, uid) == "2|2", failures(env, uid))


def test_p08_p09(res, env, port):
    app = env.clients["app"]["client_id"]
    before = env.counted(port, "SELECT failed_logins FROM users WHERE id = '%s'" % env.users["bob"])
    long_pw = login(port, {"username": "bob", "password": "a" * 4096, "client_id": app})
    res.check("P08: 4 KiB password → 400 before hashing", long_pw[0] == 400, repr(long_pw[0]))
    huge = login(port, {"username": "bob", "password": "a" * (1 << 20), "client_id": app})
    res.check("P08: 1 MiB body → 413", huge[0] == 413, repr(huge[0]))
    empty = login(port, {"username": "bob", "password": "", "client_id": app})
    res.check("P08: empty password → 400", empty[0] == 400, repr(empty[0]))
    nul = login(port, {"username": "bob", "password": PASSWORD + "\u0000x", "client_id": app})
    res.check("P09: password holding NUL → 400", nul[0] == 400, repr(nul))
    after = env.counted(port, "SELECT failed_logins FROM users WHERE id = '%s'" % env.users["bob"])
    res.check("P08/P09: nothing counted against the account", before == after, "%s → %s" % (before, after))


def bcrypt_hashes():
    """{prefix: hash of PASSWORD} made by htpasswd ($2y$) and crypt ($2b$, then $2a$)."""
    out = {}
    r = subprocess.run(["htpasswd", "-nbB", "-C", "5", "u", PASSWORD], stdout=subprocess.PIPE, timeout=30)
    out["2y"] = r.stdout.decode().strip().split(":", 1)[1]
    h = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
    out["2b"] = h
    out["2a"] = "$2a$" + h[4:]
    return out


def test_p10(res, env, port):
    app = env.clients["app"]["client_id"]
    for prefix, h in sorted(bcrypt_hashes().items()):
        name = "legacy-" + prefix
        uid = env.user(name, password="an unused passphrase")
        env.sql("UPDATE users SET password_hash = '%s' WHERE id = '%s'" % (h, uid))
        res.check("P10: $%s$ imported hash is $%s$" % (prefix, prefix), h.startswith("$%s$" % prefix), h)
        st = login(port, {"username": name, "password": "wrong password", "client_id": app})[0]
        res.check("P10: $%s$ user, wrong password → 401, hash kept" % prefix, st == 401 and env.sql(
            "SELECT password_hash FROM users WHERE id = '%s'" % uid) == h, repr(st))
        st, _, body = good_login(env, port, name)
        stored = env.sql("SELECT password_hash FROM users WHERE id = '%s'" % uid)
        res.check("P10: $%s$ user logs in and the row is rehashed to Argon2id" % prefix,
                  st == 200 and stored.startswith("$argon2id$"), "%s %s" % (st, stored))
        st2 = good_login(env, port, name)[0]
        res.check("P10: $%s$ user logs in again with the new hash" % prefix, st2 == 200, repr(st2))


def test_p11(res, env, port):
    """bcrypt reads only the first 72 bytes: documented, and ended by the first rehash."""
    app = env.clients["app"]["client_id"]
    exact = "x" * 72 + "-exact-8"
    twin = "x" * 72 + "-twin-80"
    r = subprocess.run(["htpasswd", "-nbB", "-C", "5", "u", exact], stdout=subprocess.PIPE, timeout=30)
    h = r.stdout.decode().strip().split(":", 1)[1]
    for label, first in (("the exact password", exact), ("a password with the same first 72 bytes", twin)):
        name = "legacy-72-" + ("exact" if first is exact else "twin")
        uid = env.user(name, password="an unused passphrase")
        env.sql("UPDATE users SET password_hash = '%s' WHERE id = '%s'" % (h, uid))
        st = login(port, {"username": name, "password": first, "client_id": app})[0]
        stored = env.sql("SELECT password_hash FROM users WHERE id = '%s'" % uid)
        res.check("P11: a bcrypt user logs in with %s (bcrypt truncates at 72 bytes), rehashed" % label,
                  st == 200 and stored.startswith("$argon2id$"), "%s %s" % (st, stored[:12]))
        other = twin if first is exact else exact
        st = login(port, {"username": name, "password": other, "client_id": app})[0]
        res.check("P11: ... after the rehash only that exact password works", st == 401, repr(st))


def test_p12(res, env, port, srv):
    app = env.clients["app"]["client_id"]
    base = env.sql("SELECT password_hash FROM users WHERE id = '%s'" % env.users["bob"])
    for label, find, repl in (("m = 4 GiB", "m=19456", "m=4194304"), ("t = 1000", "t=2", "t=1000")):
        uid = env.user("tampered-" + label.split()[0], password=PASSWORD)
        h = env.sql("SELECT password_hash FROM users WHERE id = '%s'" % uid)
        bad = h.replace(find, repl, 1)
        env.sql("UPDATE users SET password_hash = '%s' WHERE id = '%s'" % (bad, uid))
        st = login(port, {"username": "tampered-" + label.split()[0], "password": PASSWORD, "client_id": app})[0]
        res.check("P12: stored hash with %s → 401, server alive" % label,
                  bad != h and st == 401 and srv.alive(), "%s %s" % (st, bad))
    res.check("P12: the policy's hashes are m=19456,t=2", "m=19456,t=2" in base, base)


def test_lockout(res, env, port):
    uid = env.user("locky")
    app = env.clients["app"]["client_id"]
    wrong = None
    for i in range(LOCK_THRESHOLD):
        wrong = refusal(login(port, {"username": "locky", "password": "guess %d" % i, "client_id": app}))
    locked = env.counted(port, "SELECT failed_logins, locked_until > now() FROM users WHERE id = '%s'" % uid)
    res.check("P03: %d failures lock the account" % LOCK_THRESHOLD, locked == "%d|t" % LOCK_THRESHOLD, locked)
    audit = env.sql("SELECT count(*) FROM audit_log WHERE action = 'locked_out' AND actor_id = '%s'" % uid)
    res.check("P03: audit locked_out", audit == "1", audit)
    until = env.sql("SELECT locked_until FROM users WHERE id = '%s'" % uid)
    during = refusal(login(port, {"username": "locky", "password": PASSWORD, "client_id": app}))
    res.check("P03: during the wait the right password gets the wrong-password answer", during == wrong,
              "%r\n%r" % (during, wrong))
    res.check("P04: a try during the wait does not lengthen it",
              env.counted(port, "SELECT locked_until FROM users WHERE id = '%s'" % uid) == until)
    wait_unlocked(env, port, uid)
    st = good_login(env, port, "locky")[0]
    row = env.sql("SELECT failed_logins, locked_until IS NULL FROM users WHERE id = '%s'" % uid)
    res.check("P04: after the wait the right password works; the count is reset", st == 200 and row == "0|t",
              "%s %s" % (st, row))
    for i in range(LOCK_THRESHOLD):
        login(port, {"username": "locky", "password": "again %d" % i, "client_id": app})
    wait_unlocked(env, port, uid)
    login(port, {"username": "locky", "password": "one more", "client_id": app})
    wait = float(env.counted(port, "SELECT extract(epoch FROM locked_until - now()) FROM users WHERE id = '%s'" % uid))
    res.check("P03: the next failure past the threshold waits longer (about %d s)" % (2 * LOCK_FIRST_WAIT_S),
              LOCK_FIRST_WAIT_S < wait <= 2 * LOCK_FIRST_WAIT_S, "%.2f s" % wait)
    wait_unlocked(env, port, uid)
    res.check("P04: and it ends too", good_login(env, port, "locky")[0] == 200)


def wait_unlocked(env, port, uid):
    wait = float(env.counted(port, "SELECT greatest(0, extract(epoch FROM locked_until - now())) FROM users "
                         "WHERE id = '%s'" % uid) or 0)
    time.sleep(wait + 0.2)


def test_clients(res, env, port):
    svc = login(port, {"username": "alice", "password": PASSWORD, "client_id": env.clients["svc"]["client_id"]})
    res.check("a client that is not first-party → 400", svc[0] == 400, repr(svc))
    unknown = login(port, {"username": "alice", "password": PASSWORD, "client_id": "no-such-client"})
    res.check("an unknown client → 400", unknown[0] == 400, repr(unknown))
    missing = login(port, {"username": "alice", "password": PASSWORD})
    res.check("no client_id → 400", missing[0] == 400, repr(missing))
    other = login(port, {"username": "alice", "password": PASSWORD,
                         "client_id": env.clients["app"]["client_id"]}, tenant="nope")
    res.check("an unknown tenant → 404", other[0] == 404, repr(other))
    both = login(port, {"username": "alice", "email": "alice@example.test", "password": PASSWORD,
                        "client_id": env.clients["app"]["client_id"]})
    res.check("username and email together → 400", both[0] == 400, repr(both))
    bad = login(port, None, raw=b"{not json")
    res.check("a body that is not JSON → 400", bad[0] == 400, repr(bad))


def grant(port, client, **form):
    body = dict({"grant_type": "password"}, **form)
    status, headers, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, urllib.parse.urlencode(body),
                                 {"Content-Type": "application/x-www-form-urlencoded",
                                  "Authorization": basic(client)})
    return status, headers, jbody(data)


def test_password_grant(res, env, port):
    app, other, svc = env.clients["app"], env.clients["other"], env.clients["svc"]
    st, headers, body = grant(port, app, username="alice", password=PASSWORD)
    claims = jwt_claims(body["access_token"]) if st == 200 else {}
    res.check("password grant: 200 with a refresh token, sub = user, sid, no-store",
              st == 200 and body.get("refresh_token", "").startswith("rt_")
              and claims.get("sub") == env.users["alice"] and claims.get("sid") == sid_of(body["refresh_token"])
              and hdr(headers, "cache-control") == "no-store", "%s %r" % (st, body))
    form = {"grant_type": "refresh_token", "refresh_token": body.get("refresh_token", "")}
    rst = call(port, "POST", "/t/%s/oauth2/token" % TENANT, urllib.parse.urlencode(form),
               {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(app)})[0]
    res.check("password grant: its refresh token refreshes", rst == 200, repr(rst))
    wrong = grant(port, app, username="alice", password="not it")
    unknown = grant(port, app, username="nobody-at-all", password="not it")
    res.check("password grant: wrong password → 400 invalid_grant", wrong[0] == 400
              and wrong[2].get("error") == "invalid_grant", repr(wrong))
    res.check("password grant P01: unknown user → the same answer",
              (unknown[0], unknown[2]) == (wrong[0], wrong[2])
              and refusal(unknown)[1] == refusal(wrong)[1], "%r %r" % (unknown, wrong))
    for label, client in (("a client without the grant", other), ("a client that is not first-party", svc)):
        st, _, body = grant(port, client, username="alice", password=PASSWORD)
        res.check("password grant: %s → 400 unauthorized_client" % label,
                  st == 400 and body.get("error") == "unauthorized_client", "%s %r" % (st, body))
    st, _, body = grant(port, dict(app, client_secret="wrong"), username="alice", password=PASSWORD)
    res.check("password grant: a wrong client secret → 401 invalid_client",
              st == 401 and body.get("error") == "invalid_client", "%s %r" % (st, body))
    st, _, body = grant(port, app, username="alice", password=PASSWORD, scope="read admin")
    res.check("password grant: a wider scope → invalid_scope", st == 400 and body.get("error") == "invalid_scope",
              "%s %r" % (st, body))
    st, _, body = grant(port, app, username="alice", password=PASSWORD, scope="read")
    res.check("password grant: a narrower scope is granted", st == 200
              and jwt_claims(body["access_token"]).get("scope") == "read", "%s %r" % (st, body))


def flood_request(env, i):
    user = "flood" if i % FLOOD_VALID_EVERY == 0 else "ghost-%d" % i
    body = json.dumps({"username": user, "password": PASSWORD,
                       "client_id": env.clients["app"]["client_id"]}).encode()
    head = ("POST /t/%s/api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (TENANT, len(body)))
    return head.encode() + body


def read_status(sock):
    """(status, has Retry-After) of the one response on sock (Connection: close)."""
    sock.settimeout(FLOOD_READ_S)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    parts = head.split(" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None), "\r\nretry-after:" in head


def test_f15(res, env):
    # The idle deadline is the backstop of a parked request's wait (proto/http_server.c): on a
    # loaded machine the queue's last logins wait longer than the default 60 s, and a silent
    # close would read as a lost answer. The flood tests the queue's bound, not that backstop.
    srv = env.server(TESSERA_WORKERS=1, TESSERA_ARGON2_M_KIB=FLOOD_ARGON2_M_KIB, TESSERA_ARGON2_T=1,
                     TESSERA_IDLE_TIMEOUT_MS=FLOOD_IDLE_MS)
    uid = env.user("flood")
    st, _, body = good_login(env, srv.port, "flood")
    token = body.get("access_token", "")
    # Every shard loads the tenant's keys now: a cold shard's load itself needs the worker
    # pool (auth/tenants.c), which the flood fills (reported to the lead).
    warm = [verify(srv.port, token)[0] for _ in range(8)]
    before = int(env.sql("SELECT count(*) FROM sessions WHERE user_id = '%s'" % uid))
    socks = []
    for i in range(FLOOD):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        sock.sendall(flood_request(env, i))
        socks.append(sock)
    during = [verify(srv.port, token)[0] for _ in range(4)]
    answers = [read_status(s) for s in socks]
    statuses = [a[0] for a in answers]
    n503 = statuses.count(503)
    n200 = statuses.count(200)
    res.check("F15: a full worker queue answers 503 with Retry-After",
              n503 > 0 and all(a[1] for a in answers if a[0] == 503), "%d of %d were 503" % (n503, FLOOD))
    res.check("F15: every other login answered 200 or 401",
              all(s in (200, 401, 503) for s in statuses), repr(sorted(set(map(str, statuses)))))
    res.check("F15: /verify answers 200 during the flood (keys loaded before)",
              st == 200 and warm == [200] * 8 and during == [200] * 4, "%r %r" % (warm, during))
    after = int(env.sql("SELECT count(*) FROM sessions WHERE user_id = '%s'" % uid))
    res.check("F15: a session for each 200 and none for a 503", after - before == n200,
              "%d sessions, %d answered 200" % (after - before, n200))
    print("MEASURE F15: %d logins at once with one worker: %d × 503, %d × 200, %d × 401"
          % (FLOOD, n503, n200, statuses.count(401)), flush=True)
    check_clean_exit(res, srv, "F15 server exits 0 on SIGTERM, no sanitizer report")


def test_queue_sheds(res, env):
    """A login still queued when its request's backstop answered 503 is not run
    (workers_submit_by): no Argon2id spent on it, no session made that nobody hears of."""
    srv = env.server(TESSERA_WORKERS=1, TESSERA_IDLE_TIMEOUT_MS=SHED_IDLE_MS)
    uid = env.user("shed")
    verify(srv.port, "warm.up.keys")
    body = json.dumps({"username": "shed", "password": PASSWORD,
                       "client_id": env.clients["app"]["client_id"]}).encode()
    head = ("POST /t/%s/api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (TENANT, len(body))).encode()
    socks = []
    for _ in range(SHED_LOGINS):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        sock.sendall(head + body)
        socks.append(sock)
    answers = [read_status(s) for s in socks]
    statuses = [a[0] for a in answers]
    n200, n503 = statuses.count(200), statuses.count(503)
    time.sleep(SHED_SETTLE_S)  # the rest of the queue is shed, not run
    sessions = int(env.sql("SELECT count(*) FROM sessions WHERE user_id = '%s'" % uid))
    res.check("shed: logins past the backstop answer 503 with Retry-After, the rest 200",
              n503 > 0 and n200 + n503 == SHED_LOGINS and all(a[1] for a in answers if a[0] == 503),
              "%d × 200, %d × 503 of %d" % (n200, n503, SHED_LOGINS))
    res.check("shed: no session for a login answered 503 (at most %d running at its deadline)" % SHED_EDGE,
              n200 <= sessions <= n200 + SHED_EDGE, "%d sessions, %d answered 200" % (sessions, n200))
    print("MEASURE shed: %d logins at once, one worker, backstop %d ms: %d × 200, %d × 503, %d sessions"
          % (SHED_LOGINS, SHED_IDLE_MS, n200, n503, sessions), flush=True)
    check_clean_exit(res, srv, "shed: server exits 0 on SIGTERM, no sanitizer report")


COLD_VERIFIES = 100          # /verify requests at once to a server whose shards hold no keys yet
SHARDS = 2                   # Env.server's TESSERA_SHARDS


def test_cold_single_load(res, env):
    """A shard loads a tenant's keys once however many requests need them at the same moment
    (auth/tenants.c AUTH_TENANT_FLIGHTS); the others wait on that load."""
    env.user("cold")
    issuer = env.server()
    try:
        token = good_login(env, issuer.port, "cold")[2].get("access_token", "")
    finally:
        issuer.kill()
    cold = env.server()
    try:
        head = ("GET /t/%s/verify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                "Authorization: Bearer %s\r\n\r\n" % (TENANT, token)).encode()
        socks = []
        for _ in range(COLD_VERIFIES):
            sock = socket.create_connection(("127.0.0.1", cold.port), timeout=30)
            sock.sendall(head)
            socks.append(sock)
        statuses = [read_status(s)[0] for s in socks]
        _, _, metrics = call(cold.port, "GET", "/metrics")
        loads = [int(line.split()[1]) for line in metrics.decode().splitlines()
                 if line.startswith("tessera_tenant_key_loads_total ")]
        res.check("cold shards: %d /verify at once all answer 200" % COLD_VERIFIES,
                  statuses == [200] * COLD_VERIFIES, repr(sorted(set(map(str, statuses)))))
        res.check("cold shards: one key load per shard, not one per request",
                  len(loads) == 1 and 1 <= loads[0] <= SHARDS, repr(loads))
    finally:
        cold.kill()


# ---------------------------------------------------------------------------- P05, P06, P07

def fullwidth(text):
    """ASCII 0x21..0x7E as the fullwidth forms U+FF01..U+FF5E."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def test_p06(res, env, port):
    uid = env.user("Bob-P06")
    stored = env.sql("SELECT username FROM users WHERE id = '%s'" % uid)
    res.check("P06: a username is stored normalised (Bob-P06 → bob-p06)", stored == "bob-p06", stored)
    for label, name in (("BOB-P06", "BOB-P06"), ("bob-p06", "bob-p06"), ("' bob-p06 '", " bob-p06 "),
                        ("fullwidth", fullwidth("bob-p06"))):
        st, _, body = good_login(env, port, name)
        sub = jwt_claims(body["access_token"]).get("sub") if st == 200 else None
        res.check("P06: %s logs in to the same account" % label, st == 200 and sub == uid, "%s %r" % (st, sub))
    st, _, body = grant(port, env.clients["app"], username=fullwidth("BOB-P06"), password=PASSWORD)
    res.check("P06: the password grant normalises the same way", st == 200, "%s %r" % (st, body))
    app = env.clients["app"]["client_id"]
    unknown = refusal(login(port, {"username": "nobody-p06", "password": PASSWORD, "client_id": app}))
    cyrillic = refusal(login(port, {"username": "b\u043eb-p06", "password": PASSWORD, "client_id": app}))
    spaced = refusal(login(port, {"username": "bob p06", "password": PASSWORD, "client_id": app}))
    res.check("P06: Cyrillic-о 'bоb-p06' is another (unknown) account: the unknown user's 401",
              cyrillic == unknown and unknown[0] == 401, "%r\n%r" % (cyrillic, unknown))
    res.check("P06: a name the profile refuses (space inside) is an unknown user, not a 400",
              spaced == unknown, repr(spaced))
    try:
        env.user(fullwidth("BOB-P06"))
        duplicate = True
    except RuntimeError:
        duplicate = False
    res.check("P06: admin user create of fullwidth 'ＢＯＢ－Ｐ０６' is the same name: refused", not duplicate)


def test_p07(res, env, port):
    nfc = "Cr\u00e8me br\u00fbl\u00e9e, s'il vous pla\u00eet"
    nfd = "Cre\u0300me bru\u0302le\u0301e, s'il vous plai\u0302t"
    app = env.clients["app"]["client_id"]
    env.user("p07-nfd", password=nfd)
    for label, pw in (("NFC", nfc), ("NFD", nfd), ("NBSP for spaces", nfc.replace(" ", "\u00a0"))):
        st = login(port, {"username": "p07-nfd", "password": pw, "client_id": app})[0]
        res.check("P07: a password set as NFD logs in typed as %s" % label, st == 200, repr(st))
    wrong = refusal(login(port, {"username": "p07-nfd", "password": "not the password", "client_id": app}))
    ctl = refusal(login(port, {"username": "p07-nfd", "password": nfc + "\t", "client_id": app}))
    res.check("P07: a control character in a login password is the wrong password's answer", ctl == wrong,
              "%r\n%r" % (ctl, wrong))
    # JSON must be UTF-8 (RFC 8259 §8.1): the body parser refuses invalid bytes and lone
    # surrogates as a malformed body, before any name is looked at, so the 400 is the same
    # for every name and nothing is counted.
    before = env.counted(port, "SELECT failed_logins FROM users WHERE username = 'p07-nfd'")
    answers = []
    for user in ("p07-nfd", "nobody-p07"):
        raw = b'{"username": "%s", "password": "caf\xe9 \xff\xfe bytes", "client_id": "%s"}' % (
            user.encode(), app.encode())
        answers.append(refusal(login(port, None, raw=raw)))
        answers.append(refusal(login(port, {"username": user, "password": "x\udc80yz12345", "client_id": app})))
    after = env.counted(port, "SELECT failed_logins FROM users WHERE username = 'p07-nfd'")
    res.check("P07: invalid UTF-8 in a JSON login: one 400 for known and unknown names, nothing counted",
              answers[0][0] == 400 and all(a == answers[0] for a in answers) and before == after,
              "%r %s→%s" % (answers, before, after))
    # A form body carries any bytes: there invalid UTF-8 reaches the normaliser and is a wrong
    # password (the same invalid_grant, P01).
    body = "grant_type=password&username=p07-nfd&password=caf%E9+%FF%FE+bytes"
    bad = call(port, "POST", "/t/%s/oauth2/token" % TENANT, body,
               {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(env.clients["app"])})
    wrong_grant = grant(port, env.clients["app"], username="p07-nfd", password="not the password")
    res.check("P07: invalid UTF-8 in a password grant is the wrong password's invalid_grant",
              (bad[0], jbody(bad[2])) == (wrong_grant[0], wrong_grant[2]) and bad[0] == 400
              and refusal(bad)[1] == refusal(wrong_grant)[1], "%r\n%r" % (bad, wrong_grant))
    # An imported bcrypt hash of the NFD bytes: the raw bytes only, then the normalised rehash.
    uid = env.user("legacy-p07", password="an unused passphrase")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        h = crypt.crypt(nfd, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
    env.sql("UPDATE users SET password_hash = '%s' WHERE id = '%s'" % (h, uid))
    st_nfc = login(port, {"username": "legacy-p07", "password": nfc, "client_id": app})[0]
    res.check("P07: a bcrypt hash of NFD bytes refuses the NFC form (raw bytes only, documented)",
              st_nfc == 401, repr(st_nfc))
    st_nfd = login(port, {"username": "legacy-p07", "password": nfd, "client_id": app})[0]
    stored = env.sql("SELECT password_hash FROM users WHERE id = '%s'" % uid)
    res.check("P07: ... accepts the bytes it was made from, and is rehashed to Argon2id",
              st_nfd == 200 and stored.startswith("$argon2id$"), "%s %s" % (st_nfd, stored[:12]))
    st_after = login(port, {"username": "legacy-p07", "password": nfc, "client_id": app})[0]
    res.check("P07: ... after which NFC logs in too (the rehash took the normalised password)",
              st_after == 200, repr(st_after))


def masked(resp):
    """A 429 with the values that count down (Retry-After, RateLimit) blanked."""
    status, headers, data = refusal(resp)
    return status, [(k, "" if k in ("retry-after", "ratelimit") else v) for k, v in headers], data


def hammer(port, name, n, tenant=TENANT, client=None, spread=False):
    """n logins at name with a wrong password: their statuses and the first 429."""
    statuses, first = [], None
    for i in range(n):
        source = "127.0.0.%d" % (2 + i % P05_ADDRESSES) if spread else None
        resp = login(port, {"username": name, "password": "wrong password %d" % i, "client_id": client},
                     tenant=tenant, source=source)
        statuses.append(resp[0])
        if resp[0] == 429 and first is None:
            first = resp
    return statuses, first


def limited_after_burst(statuses, burst, elapsed_s, per_min):
    """burst + 1 tries pass at once, one more per 60 / per_min seconds since; then 429."""
    passed = len([s for s in statuses if s != 429])
    first_429 = statuses.index(429) if 429 in statuses else len(statuses)
    return (all(s == 401 for s in statuses[:burst + 1]) and 429 in statuses
            and passed <= burst + 1 + int(elapsed_s * per_min / 60) + 1 and first_429 >= burst + 1)


def p05_tenant(env, slug, settings):
    env.admin("admin", "tenant", "create", slug)
    env.admin("admin", "keys", "rotate", "--tenant", slug)
    env.sql("UPDATE tenants SET settings = '%s' WHERE slug = '%s'" % (json.dumps(settings), slug))
    return env.admin("admin", "client", "create", "--tenant", slug, "--name", "app", "--scope", "read",
                     "--first-party", "--grant", "password")["client_id"]


def test_p05(res, env):
    off = p05_tenant(env, "p05-off", {"rate_limit": {"account_per_min": 0}})
    slow = p05_tenant(env, "p05-slow", {"rate_limit": {"account_per_min": 6, "account_burst": 2}})
    srv = env.server(TESSERA_RATE_ACCOUNT_PER_MIN=None)  # the compiled-in default
    port, app = srv.port, env.clients["app"]["client_id"]
    env.user("victim-p05")
    start = time.monotonic()
    unknown, u429 = hammer(port, "ghost-p05", P05_TRIES, client=app)
    res.check("P05: one unknown name: %d tries pass, then 429" % (ACCOUNT_BURST + 1),
              limited_after_burst(unknown, ACCOUNT_BURST, time.monotonic() - start, ACCOUNT_PER_MIN), repr(unknown))
    retry = hdr(u429[1], "retry-after") if u429 else None
    res.check("P05: ... with Retry-After and RateLimit-Policy \"account\";q=%d;w=60" % ACCOUNT_PER_MIN,
              u429 is not None and retry is not None and retry.isdigit() and 1 <= int(retry) <= 60 // ACCOUNT_PER_MIN + 1
              and hdr(u429[1], "ratelimit-policy") == '"account";q=%d;w=60' % ACCOUNT_PER_MIN
              and (hdr(u429[1], "ratelimit") or "").startswith('"account";r=0;t='), repr(u429))
    start = time.monotonic()
    known, k429 = hammer(port, "victim-p05", P05_TRIES, client=app)
    res.check("P05: one known name: the same limit",
              limited_after_burst(known, ACCOUNT_BURST, time.monotonic() - start, ACCOUNT_PER_MIN), repr(known))
    res.check("P05: the 429 of a known name is the unknown name's (no enumeration)",
              u429 is not None and k429 is not None and masked(k429) == masked(u429),
              "%r\n%r" % (k429 and masked(k429), u429 and masked(u429)))
    for label, name in (("upper case", "VICTIM-P05"), ("fullwidth", fullwidth("victim-p05")),
                        ("surrounding spaces", " victim-p05 ")):
        st = login(port, {"username": name, "password": PASSWORD, "client_id": app})[0]
        res.check("P05: %s shares the normalised name's bucket: 429" % label, st == 429, repr(st))
    st = grant(port, env.clients["app"], username="Victim-P05", password=PASSWORD)[0]
    res.check("P05: the password grant shares the bucket: 429", st == 429, repr(st))
    start = time.monotonic()
    spread, _ = hammer(port, "spread-p05", P05_TRIES, client=app, spread=True)
    res.check("P05: tries from %d addresses at one name are stopped the same" % P05_ADDRESSES,
              limited_after_burst(spread, ACCOUNT_BURST, time.monotonic() - start, ACCOUNT_PER_MIN), repr(spread))
    others = [login(port, {"username": "other-p05-%d" % i, "password": "x" * 12, "client_id": app})[0]
              for i in range(P05_TRIES)]
    res.check("P05: one address, many names: no account bucket fills", set(others) == {401}, repr(others))
    free, _ = hammer(port, "ghost-p05", P05_TRIES, tenant="p05-off", client=off)
    res.check("P05: settings.rate_limit account_per_min 0 turns it off for that tenant",
              set(free) == {401}, repr(free))
    start = time.monotonic()
    tight, t429 = hammer(port, "ghost-p05", 6, tenant="p05-slow", client=slow)
    res.check("P05: settings.rate_limit account_per_min 6, burst 2: 3 tries, then 429",
              limited_after_burst(tight, 2, time.monotonic() - start, 6)
              and t429 is not None and hdr(t429[1], "ratelimit-policy") == '"account";q=6;w=60', repr(tight))
    check_clean_exit(res, srv, "P05 server exits 0 on SIGTERM, no sanitizer report")


def run_all(res, env):
    srv = env.server()
    res.run("success", test_success, res, env, srv.port)
    res.run("P13", test_p13, res, env, srv.port)
    res.run("P01", test_p01, res, env, srv.port)
    res.run("P08/P09", test_p08_p09, res, env, srv.port)
    res.run("P10", test_p10, res, env, srv.port)
    res.run("P11", test_p11, res, env, srv.port)
    res.run("P12", test_p12, res, env, srv.port, srv)
    res.run("P03/P04", test_lockout, res, env, srv.port)
    res.run("clients", test_clients, res, env, srv.port)
    res.run("password grant", test_password_grant, res, env, srv.port)
    res.run("P06", test_p06, res, env, srv.port)
    res.run("P07", test_p07, res, env, srv.port)
    check_clean_exit(res, srv)
    res.run("P01, refusal first", test_refusal_first, res, env)
    res.run("P05", test_p05, res, env)
    res.run("F15", test_f15, res, env)
    res.run("cold single load", test_cold_single_load, res, env)
    res.run("queue sheds", test_queue_sheds, res, env)


def main():
    run_with_env("password login", "login", run_all, tools=("htpasswd",))


if __name__ == "__main__":
    main()
