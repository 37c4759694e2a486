#!/usr/bin/env python3
"""Personal API keys (DESIGN §4 "API key"; SECURITY K01-K05, K07, T04, T09): POST, GET and
DELETE /t/{tenant}/api/v1/me/api-keys with the user's access token, and the keys used at
GET /t/{tenant}/verify and POST /t/{tenant}/oauth2/introspect.

Its own Postgres cluster; tenants acme (users, the first-party client app with scope
"read write", svc allowed to introspect, an admin client with users:write) and beta (its own
app, introspecting client and user). The main server runs FOUR shards at
TESSERA_LOG_LEVEL=debug with the access log on; connections pinned to every shard
(`pinned_all`) show what each shard's cache answers. Checks:
- create: 201 with exactly id (UUID), key (sk_ + 43 base64url, 46 chars, 32 bytes), prefix
  (== key[3:11]), name, scope, client_id (the minting token's), created_at (int, now),
  expires_at (null; created_at + expires_in when given); Cache-Control no-store; the row holds
  the key's SHA-256 and prefix, never the key; an audit row api_key_created (actor user, target
  the key) whose details hold the prefix and nothing more of the key;
- scope: absent = the minting token's whole scope (also a narrower password-grant token's);
  a subset is kept; a word outside the token's scope: 400 whose problem detail names scope;
  "" and a non-string: 400;
- every 400 of name (missing, "", 101 bytes, 102 bytes of UTF-8, control characters, 0x7f,
  not a string) and of expires_in (0, -1, 315360001, 10^20, 1.5, "60", true); 100 bytes and
  315360000 are accepted; a body that is not JSON or a wrong Content-Type: 400 or 415;
- no token, a garbage token, an API key as bearer (at /me/api-keys, /me, /me/sessions): 401
  Bearer invalid_token; a client's own client_credentials token: 400;
- 409 at the 101st live key of one user (100 made in a loop), nothing stored; a revoked key
  frees its place; the list holds all 100, newest first; 30 mints at once on a user's last 10
  places: exactly 10 are 201 and 100 keys are stored (0008's trigger counts after the lock);
- a token of a client that is not first-party: 403 (a third party's delegated token must not
  become a key outliving its grant); a client narrowed to "read": its key minted with "read
  write" introspects with scope read and /verify?scope=write is 403;
- list: only the user's live keys (not revoked, not expired), newest first, exactly the
  documented members (id, prefix, name, scope, client_id, created_at, expires_at, last_used_at:
  Unix seconds of the last use or null; test_api_keys_admin.py checks its stamping), never the
  key, its secret or its digest; no-store; bob never sees alice's keys and alice never bob's;
- delete: 204, a 'key' revocation row; again 404; not a UUID, an unknown id, another user's
  key: 404 (and that key still verifies, no revocation row planted); audit api_key_revoked;
- /verify: 200 with exactly X-Auth-Subject/-Client/-Scope/-Tenant/-Token-Id (user id,
  client_id, the key's scope, tenant id, key id); ?scope held 200, not held 403
  insufficient_scope;
- 401 `Bearer realm="acme", error="invalid_token"` for an unknown key; K01: a key with a real
  display prefix and a wrong remainder gets the unknown key's status, headers and body (the
  timing of both is printed); K02: wrong length, '+', '/', '=', whitespace, missing sk_, a
  10 KiB value: 401 on every shard, introspection inactive (the 10 KiB one: 400
  invalid_request, a token parameter longer than any token), and no Postgres query
  (tessera_pg_queries_total grows by less than half the requests sent; a control shows as many
  well-formed unknown keys do grow it by one each);
- K03: ?access_token= and ?api_key= are 401 error="invalid_request" even with a good header;
- introspection of a live key: exactly active, scope, client_id, sub, iat (= created_at), jti,
  iss (the tenant's issuer, as in the user's access token), token_type "api_key", tid, and exp
  only for an expiring key; everything inactive is exactly {"active": false};
- K04: revoked (DELETE): the key verified on every shard first, then 401 on every shard within
  50 ms of the 204 (the first question after the 204 already 401) and inactive; expired
  (expires_in 2, sleep 3): cached on every shard, then 401 everywhere, inactive, not listed;
  owner disabled / deleted by the admin API: cached on every shard, then 401 everywhere within
  50 ms of the admin's 204, inactive;
- T04/T09: acme's key, cached on every shard, asked at beta's /verify on the same connections:
  401 realm="beta" everywhere (and still 200 at acme); beta's key at acme: 401; introspection
  at the other tenant: inactive;
- logout-all ends sessions, not keys: the key minted before it verifies on every shard right
  after (the session's access token refused), and on every shard of a fresh server that reads
  everything again (where revoked, expired and orphaned keys are 401);
- K07, a server with TESSERA_RATE_ADDRESS_PER_S=5 and TESSERA_RATE_BURST_S=1: well-formed wrong
  keys are 401 until the address's bucket is spent, then 429 with Retry-After,
  RateLimit-Policy "address";q=5;w=1 and RateLimit; an audit row api_key_refused (actor_kind
  address) per refused key, its details the prefix and nothing more of the key; a valid key
  cached on every shard still answers 200 (three rounds on every shard, the bucket spent);
  malformed keys are 401, never 429;
- K05: after every server exits (each ran at debug level with the access log on, which did
  log the API-key requests), no created key, its 43-char secret or anything after its prefix
  appears in its stderr; nor the wrong keys presented, nor the users' access tokens;
- every audit event each server queued was written (tessera_audit_events_total dropped 0);
- every server exits 0 on SIGTERM with no sanitizer report.
Skips when Postgres is not installed.
"""
import base64
import hashlib
import json
import os
import re
import statistics
import threading
import time
import urllib.parse
import uuid

from tessera_harness import check_clean_exit, metric, metric_sum, metric_zero
from test_admin_users import admin_call, client_token
from test_login import (PASSWORD, TENANT, call, good_login, grant, hdr, introspect, jbody, jwt_claims, login,
                        run_with_env)
from test_revocation import Pin, accepted

OTHER = "beta"
SHARDS = 4                   # the servers here: more than two, so a fan-out bug shows
PINS = 24                    # keep-alive connections per server; every shard must be among them
PROPAGATION_S = 0.050        # DESIGN §1 / SECURITY K04: a revocation reaches every shard within this
POLL_LIMIT_S = 2.0           # how long a slower propagation is still measured (and reported)
KEY_LEN = 46                 # sk_ + 43 base64url characters (32 bytes)
KEYS_MAX = 100               # AUTH_APIKEYS_PER_USER_MAX
LIFETIME_MAX_S = 315360000   # expires_in: at most ten years
EXPIRES_S = 2                # the expiring key's expires_in; the test sleeps EXPIRES_S + 1
CLOCK_SLACK_S = 120          # created_at against this machine's clock
AUDIT_WAIT_S = 5.0           # batched audit rows (TESSERA_AUDIT_FLUSH_MS, ~1 s allowed)
K02_REPEATS = 40             # each malformed key this many times; a store query each would show
K01_TRIES = 20               # timing samples of each kind (printed only)
K07_RATE = 5                 # TESSERA_RATE_ADDRESS_PER_S of the K07 server
K07_BURST_S = 1              # TESSERA_RATE_BURST_S of the K07 server
K07_MAX_TRIES = 100          # wrong keys sent at most before a 429 must have come
ACCESS_TOKEN_MAX = 6144      # auth/auth_int.h AUTH_ACCESS_TOKEN_MAX: introspection's token parameter bound
MAX_HEAD = 16384             # TESSERA_MAX_HEAD_BYTES: room for the 10 KiB key (the default is 8 KiB)
VOLATILE_HEADERS = ("x-request-id", "date")
CREATED_KEYS = sorted(["id", "key", "prefix", "name", "scope", "client_id", "created_at", "expires_at"])
LISTED_KEYS = sorted(["id", "prefix", "name", "scope", "client_id", "created_at", "expires_at", "last_used_at"])
INTROSPECTED = sorted(["active", "scope", "client_id", "sub", "iat", "jti", "iss", "token_type", "tid"])
INACTIVE = {"active": False}
SERVER_ENV = dict(TESSERA_SHARDS=SHARDS, TESSERA_LOG_LEVEL="debug", TESSERA_ACCESS_LOG="on",
                  TESSERA_MAX_HEAD_BYTES=MAX_HEAD)


def invalid(tenant=TENANT):
    return 'Bearer realm="%s", error="invalid_token"' % tenant


def keys_path(tenant=TENANT, rest=""):
    return "/t/%s/api/v1/me/api-keys%s" % (tenant, rest)


# ---------------------------------------------------------------------------- HTTP helpers

def bearer(token):
    return {"Authorization": "Bearer " + token} if token is not None else {}


def create(port, token, body=None, raw=None, content_type="application/json", tenant=TENANT):
    """POST /me/api-keys: (status, headers, parsed body, raw body)."""
    headers = bearer(token)
    data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
    if content_type:
        headers["Content-Type"] = content_type
    status, headers, data = call(port, "POST", keys_path(tenant), data, headers)
    return status, headers, jbody(data), data


def listing(port, token, tenant=TENANT):
    """GET /me/api-keys: (status, headers, parsed body, raw body)."""
    status, headers, data = call(port, "GET", keys_path(tenant), headers=bearer(token))
    return status, headers, jbody(data), data


def delete(port, token, kid, tenant=TENANT):
    return call(port, "DELETE", keys_path(tenant, "/" + kid), headers=bearer(token))[0]


def verify(port, key, tenant=TENANT, query=None):
    path = "/t/%s/verify%s" % (tenant, ("?" + urllib.parse.urlencode(query)) if query else "")
    return call(port, "GET", path, headers=bearer(key))


def refusal(resp):
    status, headers, data = resp
    return status, [h for h in headers if h[0] not in VOLATILE_HEADERS], data


def auth_headers(headers):
    return {k: v for k, v in headers if k.startswith("x-auth-")}


def sha256_forms(key):
    digest = hashlib.sha256(key.encode()).digest()
    return [digest.hex(), base64.urlsafe_b64encode(digest).decode().rstrip("="),
            base64.b64encode(digest).decode().rstrip("=")]


def leaks(text, key):
    """True when text holds anything of key past its display prefix: the key, its 43-char
    secret, the remainder, or any 8 characters in a row of the remainder."""
    rest = key[11:]
    if key in text or key[3:] in text or rest in text:
        return True
    return any(rest[i:i + 8] in text for i in range(len(rest) - 7))


def random_key():
    """A well-formed key nobody was given: sk_ + 43 canonical base64url characters."""
    return "sk_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def well_formed(key):
    if not isinstance(key, str) or len(key) != KEY_LEN or not re.fullmatch(r"sk_[A-Za-z0-9_-]{43}", key):
        return False
    raw = base64.urlsafe_b64decode(key[3:] + "=")
    return len(raw) == 32 and base64.urlsafe_b64encode(raw).decode().rstrip("=") == key[3:]


def sql_until(env, statement, pred, timeout=AUDIT_WAIT_S):
    """statement's answer once pred(answer) holds (batched writes land late), or the last one."""
    deadline = time.monotonic() + timeout
    out = env.sql(statement)
    while not pred(out) and time.monotonic() < deadline:
        time.sleep(0.1)
        out = env.sql(statement)
    return out


# ---------------------------------------------------------------------------- pinned connections

def pinned_all(port, shards=SHARDS, n=PINS, tries=8):
    """n keep-alive connections among which every one of the server's shards has at least one
    (test_revocation's pinned() is for its two shards; the same reasoning: the second /metrics
    read's own connection lands on one shard, so each shard needs 2 new accepts)."""
    for _ in range(tries):
        before = accepted(port)
        pins = [Pin(port) for _ in range(n)]
        ask(pins, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        after = accepted(port)
        if len(after) == shards and all(after[s] - before.get(s, 0) >= 2 for s in after):
            return pins
        for p in pins:
            p.close()
    raise RuntimeError("could not get connections on every shard of port %d" % port)


def close_all(pins):
    for p in pins:
        p.close()


def ask(pins, raw):
    """Sends raw on every pin, then reads every answer: [Response or None]."""
    for p in pins:
        p.sock.sendall(raw)
    return [p.reader.read_response() for p in pins]


def verify_raw(key, tenant=TENANT):
    return ("GET /t/%s/verify HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n"
            % (tenant, key)).encode("latin-1")


def statuses(pins, key, tenant=TENANT):
    return [r.status if r is not None else None for r in ask(pins, verify_raw(key, tenant))]


def cached_everywhere(pins, key, tenant=TENANT, one_by_one=False):
    """Verifies key twice on every pin (the first answer is cached by its shard); all 200?
    one_by_one: the first round a pin at a time, so each shard asks Postgres once (each ask
    takes from the address's bucket; with all pins at once a shard may ask several times)."""
    if one_by_one:
        first = [s for p in pins for s in statuses([p], key, tenant)]
    else:
        first = statuses(pins, key, tenant)
    second = statuses(pins, key, tenant)
    return first == second == [200] * len(pins), first + second


def until_refused(pins, key, t0, limit_s=POLL_LIMIT_S):
    """Rounds of /verify on every pin until each said 401: (the first round all 401?, seconds
    from t0 to the answer that completed it or None past limit_s, a last round all 401?)."""
    raw = verify_raw(key)
    pending, first, last = list(pins), None, None
    while pending and time.monotonic() - t0 < limit_s:
        answers = ask(pending, raw)
        now = time.monotonic()
        if first is None:
            first = all(r is not None and r.status == 401 for r in answers)
        for p, r in zip(list(pending), answers):
            if r is not None and r.status == 401:
                pending.remove(p)
                last = now - t0
    after = statuses(pins, key) == [401] * len(pins)
    return bool(first), (None if pending else last), after


def check_refused_everywhere(res, label, pins, key, t0):
    first, took, after = until_refused(pins, key, t0)
    print("MEASURE %s: every shard 401 %s after the 204" % (label, "%.2f ms" % (took * 1000) if took is not None
                                                           else "never (%.1f s)" % POLL_LIMIT_S), flush=True)
    res.check("%s: 401 on every shard within %.0f ms of the 204" % (label, PROPAGATION_S * 1000),
              took is not None and took <= PROPAGATION_S and after, repr(took))
    return first


# ---------------------------------------------------------------------------- setup

def prepare(env, state):
    for name in ("alice", "bob", "hoarder", "racer", "dora", "dell", "lou"):
        env.user(name)
    env.clients["admin"] = env.admin("admin", "client", "create", "--tenant", TENANT, "--name", "admin",
                                     "--scope", "users:read users:write", "--grant", "client_credentials")
    env.admin("admin", "tenant", "create", OTHER)
    env.admin("admin", "keys", "rotate", "--tenant", OTHER)
    state["beta_app"] = env.admin("admin", "client", "create", "--tenant", OTHER, "--name", "app",
                                  "--scope", "read write", "--first-party", "--grant", "password")
    state["beta_gw"] = env.admin("admin", "client", "create", "--tenant", OTHER, "--name", "gw",
                                 "--scope", "read", "--grant", "client_credentials", "--introspect")
    args = ["admin", "user", "create", "--tenant", OTHER, "--username", "alice", "--password-stdin"]
    state["beta_alice"] = env.admin(*args, stdin=(PASSWORD + "\n").encode())["id"]
    state["acme_id"] = env.sql("SELECT id FROM tenants WHERE slug = '%s'" % TENANT)
    state["keys"] = []          # every key created: K05 looks for them in the logs
    state["presented"] = []     # well-formed wrong keys sent: K05 too
    state["tokens"] = []        # the users' access tokens: K05 too


def user_token(res, env, state, port, username):
    st, _, body = good_login(env, port, username)
    res.check("%s logs in (setup)" % username, st == 200, repr((st, body)))
    token = body.get("access_token", "")
    state["tokens"].append(token)
    return token


def new_key(env, state, port, token, label, tenant=TENANT, **fields):
    """A key that must be made: its 201 body (raises otherwise)."""
    st, _, body, raw = create(port, token, dict({"name": label}, **fields), tenant=tenant)
    if st != 201 or not body.get("key"):
        raise RuntimeError("creating key %r: %s %r" % (label, st, raw[:300]))
    state["keys"].append(body["key"])
    return body


# ---------------------------------------------------------------------------- create

def check_create(res, env, port, state):
    token, uid = state["alice"], env.users["alice"]
    app = env.clients["app"]["client_id"]
    st, headers, body, raw = create(port, token, {"name": "ci deploy"})
    key = body.get("key", "")
    if key:
        state["keys"].append(key)
    res.check("create: 201", st == 201, repr((st, raw[:300])))
    res.check("create: exactly id, key, prefix, name, scope, client_id, created_at, expires_at",
              sorted(body) == CREATED_KEYS, repr(sorted(body)))
    res.check("create: Cache-Control no-store", hdr(headers, "cache-control") == "no-store", repr(headers))
    res.check("create: the key is sk_ + 43 base64url characters (46, 32 random bytes)", well_formed(key), repr(key))
    res.check("create: prefix == key[3:11]", body.get("prefix") == key[3:11] and len(body.get("prefix", "")) == 8,
              repr((body.get("prefix"), key)))
    kid = body.get("id", "")
    try:
        uuid_ok = str(uuid.UUID(kid)) == kid
    except (ValueError, TypeError, AttributeError):
        uuid_ok = False
    res.check("create: id is a UUID (lowercase text)", uuid_ok, repr(kid))
    created = body.get("created_at")
    res.check("create: name as given, client_id the minting token's, created_at an integer now, expires_at null",
              body.get("name") == "ci deploy" and body.get("client_id") == app and type(created) is int
              and abs(created - time.time()) < CLOCK_SLACK_S and "expires_at" in body
              and body["expires_at"] is None, repr(body))
    res.check("create: no scope asked: the minting token's whole scope",
              sorted(body.get("scope", "").split()) == ["read", "write"], repr(body.get("scope")))
    state["main"] = body
    state["alice_keys"] = [kid]
    row = env.sql("SELECT encode(sha256, 'hex') || '|' || prefix || '|' || coalesce(client_id, '') || '|' || "
                  "user_id FROM api_keys WHERE id = '%s'" % kid)
    res.check("create: the row holds the key's SHA-256, the prefix, the client and the user",
              row == "%s|%s|%s|%s" % (hashlib.sha256(key.encode()).hexdigest(), key[3:11], app, uid), row)
    whole = env.sql("SELECT row_to_json(k)::text FROM api_keys k WHERE id = '%s'" % kid)
    res.check("create: no column holds the key or its secret", whole and not leaks(whole, key), whole)
    audit = sql_until(env, "SELECT actor_kind || '|' || actor_id || '|' || target_kind || '|' || details::text "
                      "FROM audit_log WHERE action = 'api_key_created' AND target_id = '%s'" % kid, bool)
    parts = audit.split("|", 3)
    res.check("create: audit api_key_created, actor the user, target the key",
              len(parts) == 4 and parts[:3] == ["user", uid, "api_key"] and "\n" not in audit, audit)
    res.check("create: ... its details hold the prefix and nothing more of the key",
              len(parts) == 4 and key[3:11] in parts[3] and not leaks(parts[3], key), audit)
    other = new_key(env, state, port, token, "second")
    res.check("create: two keys differ", other["key"] != key and other["id"] != kid)
    state["alice_keys"].append(other["id"])


def check_scopes(res, env, port, state):
    token = state["alice"]
    body = new_key(env, state, port, token, "reader", scope="read")
    res.check("scope: a subset (read) is kept", body.get("scope") == "read", repr(body))
    state["alice_keys"].append(body["id"])
    state["reader"] = body
    body = new_key(env, state, port, token, "both", scope="write read")
    res.check("scope: the whole scope in another order is accepted",
              sorted(body.get("scope", "").split()) == ["read", "write"], repr(body))
    state["alice_keys"].append(body["id"])
    for label, scope in (("a word outside the token's scope", "admin"), ("one word outside", "read admin")):
        st, _, _, raw = create(port, token, {"name": "bad scope", "scope": scope})
        res.check("scope: %s → 400, the problem detail naming scope" % label,
                  st == 400 and b"scope" in raw.lower(), repr((st, raw[:200])))
    for label, scope in (("\"\"", ""), ("not a string", ["read"])):
        st, _, _, raw = create(port, token, {"name": "bad scope", "scope": scope})
        res.check("scope: %s → 400" % label, st == 400, repr((st, raw[:200])))
    st, _, narrow = grant(port, env.clients["app"], username="alice", password=PASSWORD, scope="read")
    res.check("scope: a narrower token (password grant, scope read) (setup)", st == 200 and
              jwt_claims(narrow["access_token"]).get("scope") == "read", repr((st, narrow)))
    narrow_token = narrow.get("access_token", "")
    state["tokens"].append(narrow_token)
    body = new_key(env, state, port, narrow_token, "narrow")
    res.check("scope: no scope asked with a read-only token: read", body.get("scope") == "read", repr(body))
    state["alice_keys"].append(body["id"])
    for scope in ("write", "read write"):
        st, _, _, raw = create(port, narrow_token, {"name": "wider", "scope": scope})
        res.check("scope: %r with a read-only token (the client has write): 400" % scope,
                  st == 400 and b"scope" in raw.lower(), repr((st, raw[:200])))


def check_create_refusals(res, env, port, state):
    token = state["alice"]
    names = (("missing", None), ("\"\"", ""), ("101 bytes", "a" * 101), ("102 bytes of UTF-8", "\u00e9" * 51),
             ("NUL", "a\u0000b"), ("a tab", "a\tb"), ("a newline", "a\nb"), ("0x1f", "a\u001fb"),
             ("0x7f", "a\u007fb"), ("not a string", 123), ("null", None))
    for label, name in names:
        body = {} if label == "missing" else {"name": name}
        st, _, _, raw = create(port, token, body)
        res.check("name %s: 400" % label, st == 400, repr((st, raw[:200])))
    for label, name in (("100 bytes", "a" * 100), ("100 bytes of UTF-8", "\u00e9" * 50)):
        body = new_key(env, state, port, token, name)
        res.check("name of %s: 201, kept as given" % label, body.get("name") == name, repr(body.get("name")))
        state["alice_keys"].append(body["id"])
    for label, value in (("0", 0), ("-1", -1), ("315360001", LIFETIME_MAX_S + 1), ("10^20", 10 ** 20),
                         ("1.5", 1.5), ("a string", "60"), ("true", True)):
        st, _, _, raw = create(port, token, {"name": "bad lifetime", "expires_in": value})
        res.check("expires_in %s: 400" % label, st == 400, repr((st, raw[:200])))
    body = new_key(env, state, port, token, "ten years", expires_in=LIFETIME_MAX_S)
    res.check("expires_in 315360000: 201, expires_at = created_at + 315360000",
              type(body.get("expires_at")) is int and
              abs(body["expires_at"] - body.get("created_at", 0) - LIFETIME_MAX_S) <= 1, repr(body))
    state["alice_keys"].append(body["id"])
    state["ten_years"] = body
    for label, raw, ctype, allowed in (("not JSON", b"{not json", "application/json", (400, 415)),
                                       ("a JSON body as text/plain", b'{"name": "x"}', "text/plain", (400, 415)),
                                       ("a form body", b"name=x", "application/x-www-form-urlencoded", (400, 415)),
                                       ("no Content-Type", b'{"name": "x"}', None, (400, 415)),
                                       ("an empty body", b"", "application/json", (400, 415)),
                                       ("a JSON array", b"[]", "application/json", (400,)),
                                       ("a JSON string", b'"x"', "application/json", (400,))):
        st = create(port, token, raw=raw, content_type=ctype)[0]
        res.check("create with %s: %s" % (label, " or ".join(map(str, allowed))), st in allowed, repr(st))
    live = env.sql("SELECT count(*) FROM api_keys WHERE user_id = '%s' AND revoked_at IS NULL" % env.users["alice"])
    res.check("the refused creations stored nothing", live == str(len(state["alice_keys"])),
              "%s rows, %d made" % (live, len(state["alice_keys"])))


def check_bearer_refusals(res, env, port, state):
    key = state["main"]["key"]
    for label, method, body in (("GET", "GET", None), ("POST", "POST", b'{"name": "x"}')):
        headers = {"Content-Type": "application/json"} if body else {}
        st, h, _ = call(port, method, keys_path(), body, headers)
        res.check("%s /me/api-keys without a token: 401 Bearer" % label,
                  st == 401 and (hdr(h, "www-authenticate") or "").startswith("Bearer"), repr((st, h)))
        for what, token in (("a garbage token", "garbage"), ("an API key (a key cannot mint keys)", key)):
            st, h, _ = call(port, method, keys_path(), body, dict(headers, **bearer(token)))
            www = hdr(h, "www-authenticate") or ""
            res.check("%s /me/api-keys with %s: 401 Bearer invalid_token" % (label, what),
                      st == 401 and www.startswith("Bearer") and 'error="invalid_token"' in www, repr((st, h)))
    st = delete(port, key, state["main"]["id"])
    res.check("DELETE /me/api-keys/{id} with the key itself as bearer: 401", st == 401, repr(st))
    for path in ("/t/%s/api/v1/me" % TENANT, "/t/%s/api/v1/me/sessions" % TENANT):
        st = call(port, "GET", path, headers=bearer(key))[0]
        res.check("GET %s with an API key: 401 (keys do not open /api/v1)" % path.split("/v1")[1], st == 401, repr(st))
    res.check("... and the key still verifies", verify(port, key)[0] == 200)
    cc = client_token(port, env.clients["svc"])
    res.check("POST /me/api-keys with a client's own token (no session): 400",
              create(port, cc, {"name": "cc"})[0] == 400)
    res.check("GET /me/api-keys with a client's own token: 400", listing(port, cc)[0] == 400)


# ---------------------------------------------------------------------------- verify and introspect

def check_verify(res, env, port, state):
    main, reader = state["main"], state["reader"]
    st, headers, _ = verify(port, main["key"])
    want = {"x-auth-subject": env.users["alice"], "x-auth-client": env.clients["app"]["client_id"],
            "x-auth-scope": main["scope"], "x-auth-tenant": state["acme_id"], "x-auth-token-id": main["id"]}
    res.check("/verify: 200 with exactly X-Auth-Subject, -Client, -Scope, -Tenant, -Token-Id of the key",
              st == 200 and auth_headers(headers) == want, repr((st, auth_headers(headers), want)))
    st, headers, _ = verify(port, reader["key"])
    res.check("/verify: X-Auth-Scope is the key's scope (read), not the client's",
              st == 200 and hdr(headers, "x-auth-scope") == "read", repr((st, headers)))
    st = verify(port, reader["key"], query={"scope": "read"})[0]
    res.check("/verify?scope=read with a read key: 200", st == 200, repr(st))
    st, headers, _ = verify(port, reader["key"], query={"scope": "read write"})
    www = hdr(headers, "www-authenticate") or ""
    res.check("/verify?scope=read+write with a read key: 403 insufficient_scope",
              st == 403 and www.startswith('Bearer realm="%s"' % TENANT) and 'error="insufficient_scope"' in www,
              repr((st, headers)))
    k03 = (("?access_token=<the user's access token>", {"access_token": state["alice"]}),
           ("?api_key=<the key>", {"api_key": main["key"]}))
    for label, query in k03:
        st, headers, _ = verify(port, main["key"], query=query)
        res.check("K03: /verify%s with a good Authorization header: 401 invalid_request" % label,
                  st == 401 and hdr(headers, "www-authenticate") == 'Bearer realm="%s", error="invalid_request"'
                  % TENANT and not auth_headers(headers), repr((st, headers)))
    st, headers, _ = call(port, "GET", "/t/%s/verify?%s" % (TENANT, urllib.parse.urlencode({"api_key": main["key"]})))
    res.check("K03: /verify?api_key= without a header: 401 invalid_request",
              st == 401 and 'error="invalid_request"' in (hdr(headers, "www-authenticate") or ""), repr((st, headers)))


def expected_introspection(env, state, body):
    want = {"active": True, "scope": body["scope"], "client_id": body["client_id"], "sub": env.users["alice"],
            "iat": body["created_at"], "jti": body["id"], "iss": state["issuer"], "token_type": "api_key",
            "tid": state["acme_id"]}
    if body.get("expires_at") is not None:
        want["exp"] = body["expires_at"]
    return want


def check_introspection(res, env, port, state):
    for label, body in (("a key that never expires", state["main"]), ("a ten-year key", state["ten_years"])):
        st, got = introspect(port, body["key"], env.clients["svc"])
        want = expected_introspection(env, state, body)
        keys = INTROSPECTED + (["exp"] if "exp" in want else [])
        res.check("introspection of %s: exactly %s" % (label, ", ".join(sorted(keys))),
                  st == 200 and sorted(got) == sorted(keys) and got == want, "%r\n%r" % (got, want))


def malformed_keys():
    k = random_key()
    return (("wrong length (45)", k[:-1]), ("wrong length (47)", k + "A"), ("'+'", k[:20] + "+" + k[21:]),
            ("'/'", k[:20] + "/" + k[21:]), ("'='", k[:-1] + "="), ("a space", k[:20] + " " + k[21:]),
            ("a tab", k[:20] + "\t" + k[21:]), ("no sk_", k[3:]), ("sk- instead of sk_", "sk-" + k[3:]),
            ("SK_", "SK_" + k[3:]), ("a 10 KiB value", "sk_" + "A" * 10240))


def check_unknown(res, env, port, state):
    """K01, K02 and the plain unknown key."""
    svc = env.clients["svc"]
    unknown = random_key()
    real = state["main"]["key"]
    wrong_rest = real[:11] + random_key()[11:]
    state["presented"] += [unknown, wrong_rest]
    a = refusal(verify(port, unknown))
    res.check("an unknown key: 401 %s" % invalid(), a[0] == 401 and hdr(a[1], "www-authenticate") == invalid(),
              repr(a))
    b = refusal(verify(port, wrong_rest))
    res.check("K01: a real display prefix with a wrong remainder: the unknown key's status, headers and body",
              b == a, "%r\n%r" % (b, a))
    for label, key in (("an unknown key", unknown), ("K01: a real prefix, a wrong remainder", wrong_rest)):
        got = introspect(port, key, svc)
        res.check("%s: introspection exactly {\"active\": false}" % label, got == (200, INACTIVE), repr(got))
    times = {"unknown": [], "prefix": []}
    for _ in range(K01_TRIES):
        for kind, key in (("unknown", random_key()), ("prefix", real[:11] + random_key()[11:])):
            state["presented"].append(key)
            t = time.monotonic()
            verify(port, key)
            times[kind].append(time.monotonic() - t)
    print("MEASURE K01 /verify: unknown key median %.2f ms, real prefix + wrong remainder median %.2f ms (%d each)"
          % (statistics.median(times["unknown"]) * 1000, statistics.median(times["prefix"]) * 1000, K01_TRIES),
          flush=True)
    pins = state["pins"]
    rounds = K02_REPEATS // len(pins) + 1
    unknown = [random_key() for _ in pins]  # one each: a shard may remember a refusal
    state["presented"] += unknown
    before = metric_sum(port, "tessera_pg_queries_total")
    for p, k in zip(pins, unknown):
        p.sock.sendall(verify_raw(k))
    answers = [p.reader.read_response() for p in pins]
    after = metric_sum(port, "tessera_pg_queries_total")
    res.check("K02 control: as many well-formed unknown keys do ask Postgres (tessera_pg_queries_total grows "
              "by at least one each)", all(r is not None and r.status == 401 for r in answers)
              and after - before >= len(answers), "%d answers, queries %s → %s" % (len(answers), before, after))
    for label, key in malformed_keys():
        answers, before, after, took = store_queries(port, pins, [verify_raw(key)] * rounds)
        ok = all(r is not None and r.status == 401 and r.header("www-authenticate") == invalid() for r in answers)
        res.check("K02: %s: 401 %s on every shard" % (label, invalid()), ok,
                  repr([(r.status, r.header("www-authenticate")) if r else None for r in answers[:2]]))
        res.check("K02: %s: no store query (Postgres queries grow by less than half the requests)" % label,
                  before > 0 and after - before < len(answers) / 2,
                  "%d requests, queries %s → %s" % (len(answers), before, after))
        got = introspect(port, key, svc)
        if len(key) > ACCESS_TOKEN_MAX:  # a token parameter longer than any token: a bad request
            res.check("K02: %s: introspection 400 invalid_request" % label,
                      got[0] == 400 and got[1].get("error") == "invalid_request", repr(got))
        else:
            res.check("K02: %s: introspection exactly {\"active\": false}" % label, got == (200, INACTIVE),
                      repr(got))
        print("MEASURE K02 %s: %d answers in %.1f ms, Postgres queries %d → %d"
              % (label, len(answers), took * 1000, before, after), flush=True)


def store_queries(port, pins, raws):
    """Each of raws on every pin: (answers, tessera_pg_queries_total before and after, seconds)."""
    before = metric_sum(port, "tessera_pg_queries_total")
    t = time.monotonic()
    answers = []
    for raw in raws:
        answers += ask(pins, raw)
    took = time.monotonic() - t
    return answers, before, metric_sum(port, "tessera_pg_queries_total"), took


# ---------------------------------------------------------------------------- list

def check_list(res, env, port, state):
    st, headers, body, raw = listing(port, state["alice"])
    items = body.get("api_keys", [])
    ids = [k.get("id") for k in items]
    res.check("list: 200 {\"api_keys\": [...]}, no-store", st == 200 and sorted(body) == ["api_keys"]
              and hdr(headers, "cache-control") == "no-store", repr((st, raw[:200])))
    res.check("list: exactly alice's live keys, newest first", ids == list(reversed(state["alice_keys"])),
              "%r\n%r" % (ids, list(reversed(state["alice_keys"]))))
    res.check("list: every item exactly id, prefix, name, scope, client_id, created_at, expires_at, last_used_at",
              items and all(sorted(k) == LISTED_KEYS for k in items), repr(items[:1]))
    main = next((k for k in items if k.get("id") == state["main"]["id"]), {})
    res.check("list: an item repeats what the 201 said (the key aside; last_used_at the list's own)",
              {k: v for k, v in main.items() if k != "last_used_at"}
              == {k: v for k, v in state["main"].items() if k != "key"}, "%r\n%r" % (main, state["main"]))
    mine = [k for k in state["keys"] if k.startswith("sk_")]
    res.check("list: never a key, its secret or its digest",
              not any(leaks(raw.decode("utf-8", "replace"), k) or any(d in raw.decode() for d in sha256_forms(k))
                      for k in mine), raw[:300])
    bob_key = new_key(env, state, port, state["bob"], "bob's")
    state["bob_key"] = bob_key
    st, _, body, _ = listing(port, state["bob"])
    res.check("list: bob sees only his own key", st == 200 and [k.get("id") for k in body.get("api_keys", [])]
              == [bob_key["id"]], repr(body))
    _, _, body, _ = listing(port, state["alice"])
    res.check("list: alice never sees bob's", bob_key["id"] not in [k.get("id") for k in body.get("api_keys", [])])


# ---------------------------------------------------------------------------- delete and K04

def revocation_rows(env, kid):
    return env.sql("SELECT count(*) FROM revocations WHERE kind = 'key' AND value = '%s'" % kid)


def check_delete(res, env, port, state):
    token, pins = state["alice"], state["pins"]
    body = new_key(env, state, port, token, "to revoke")
    key, kid = body["key"], body["id"]
    ok, got = cached_everywhere(pins, key)
    res.check("K04 revoke: the key verifies on every shard first (cached)", ok, repr(got))
    res.check("K04 revoke: introspection active first", introspect(port, key, env.clients["svc"])[1].get("active")
              is True)
    bob_key = state["bob_key"]
    res.check("DELETE bob's key with alice's token: 404", delete(port, token, bob_key["id"]) == 404)
    res.check("... bob's key still verifies", verify(port, bob_key["key"])[0] == 200)
    res.check("... and no revocation was written for it", revocation_rows(env, bob_key["id"]) == "0")
    st = delete(port, token, kid)
    t0 = time.monotonic()
    res.check("K04 revoke: DELETE: 204", st == 204, repr(st))
    first = check_refused_everywhere(res, "K04 revoke", pins, key, t0)
    res.check("K04 revoke: the first question after the 204 on every shard: 401 (spread before the 204)", first)
    res.check("K04 revoke: 401 %s" % invalid(), hdr(verify(port, key)[1], "www-authenticate") == invalid())
    got = introspect(port, key, env.clients["svc"])
    res.check("K04 revoke: introspection exactly {\"active\": false}", got == (200, INACTIVE), repr(got))
    res.check("K04 revoke: a revocation row kind 'key' names it", revocation_rows(env, kid) == "1",
              revocation_rows(env, kid))
    _, _, listed, _ = listing(port, token)
    res.check("K04 revoke: no longer listed", kid not in [k.get("id") for k in listed.get("api_keys", [])])
    res.check("DELETE the revoked key again: 404", delete(port, token, kid) == 404)
    res.check("DELETE a non-UUID id: 404", delete(port, token, "not-a-uuid") == 404)
    res.check("DELETE an unknown id: 404", delete(port, token, str(uuid.uuid4())) == 404)
    audit = sql_until(env, "SELECT actor_kind || '|' || actor_id || '|' || target_kind FROM audit_log "
                      "WHERE action = 'api_key_revoked' AND target_id = '%s'" % kid, bool)
    res.check("DELETE: audit api_key_revoked by the user, target the key",
              audit == "user|%s|api_key" % env.users["alice"], audit)
    state["revoked_key"] = key


def check_expired(res, env, port, state):
    token, pins = state["alice"], state["pins"]
    body = new_key(env, state, port, token, "short", expires_in=EXPIRES_S)
    key = body["key"]
    res.check("expiring key: expires_at = created_at + %d" % EXPIRES_S,
              type(body.get("expires_at")) is int and abs(body["expires_at"] - body["created_at"] - EXPIRES_S) <= 1,
              repr(body))
    st, got = introspect(port, key, env.clients["svc"])
    want = expected_introspection(env, state, body)
    res.check("introspection of an expiring key: exactly the fields and exp = expires_at",
              st == 200 and got == want and sorted(got) == sorted(INTROSPECTED + ["exp"]), "%r\n%r" % (got, want))
    ok, got = cached_everywhere(pins, key)
    res.check("K04 expiry: the key verifies on every shard first (cached)", ok, repr(got))
    time.sleep(EXPIRES_S + 1)
    got = statuses(pins, key)
    res.check("K04 expiry: after %d s, 401 on every shard" % (EXPIRES_S + 1), got == [401] * len(pins), repr(got))
    got = introspect(port, key, env.clients["svc"])
    res.check("K04 expiry: introspection exactly {\"active\": false}", got == (200, INACTIVE), repr(got))
    _, _, listed, _ = listing(port, token)
    res.check("K04 expiry: no longer listed", body["id"] not in [k.get("id") for k in listed.get("api_keys", [])])
    state["expired_key"] = key


def check_owner(res, env, port, state, username, method, rest, label):
    """K04: the owner disabled or deleted by the admin API while the key is cached everywhere."""
    pins, uid = state["pins"], env.users[username]
    body = new_key(env, state, port, user_token(res, env, state, port, username), "owner's")
    key = body["key"]
    ok, got = cached_everywhere(pins, key)
    res.check("K04 %s: the key verifies on every shard first (cached)" % label, ok, repr(got))
    res.check("K04 %s: introspection active first" % label,
              introspect(port, key, env.clients["svc"])[1].get("active") is True)
    st = admin_call(port, state["admin_token"], method, "/t/%s/api/v1/users/%s%s" % (TENANT, uid, rest))[0]
    t0 = time.monotonic()
    res.check("K04 %s: the admin's %s: 204" % (label, method), st == 204, repr(st))
    check_refused_everywhere(res, "K04 %s" % label, pins, key, t0)
    got = introspect(port, key, env.clients["svc"])
    res.check("K04 %s: introspection exactly {\"active\": false}" % label, got == (200, INACTIVE), repr(got))
    state.setdefault("orphans", {})[label] = key


# ---------------------------------------------------------------------------- tenants, logout-all

def check_tenants(res, env, port, state):
    pins, main = state["pins"], state["main"]
    st, _, data = login(port, {"username": "alice", "password": PASSWORD, "client_id": state["beta_app"]["client_id"]},
                        tenant=OTHER)
    beta_token = jbody(data).get("access_token", "")
    res.check("beta's alice logs in (setup)", st == 200, repr((st, data[:200])))
    state["tokens"].append(beta_token)
    beta = new_key(env, state, port, beta_token, "beta's", tenant=OTHER)
    res.check("beta's key: the beta client's id", beta.get("client_id") == state["beta_app"]["client_id"], repr(beta))
    ok, got = cached_everywhere(pins, main["key"])
    res.check("T09: acme's key verifies on every shard (cached)", ok, repr(got))
    answers = ask(pins, verify_raw(main["key"], OTHER))
    res.check("T04/T09: acme's key at beta's /verify, on the shards that cached it: 401 %s everywhere" % invalid(OTHER),
              all(r is not None and r.status == 401 and r.header("www-authenticate") == invalid(OTHER)
                  and not any(k.startswith("x-auth-") for k, _ in r.headers) for r in answers),
              repr([r.status if r else None for r in answers]))
    got = statuses(pins, main["key"])
    res.check("T09: ... and it still verifies at acme everywhere", got == [200] * len(pins), repr(got))
    ok, got = cached_everywhere(pins, beta["key"], OTHER)
    res.check("T09: beta's key verifies at beta on every shard (cached)", ok, repr(got))
    got = statuses(pins, beta["key"])
    res.check("T04/T09: beta's key at acme's /verify: 401 on every shard", got == [401] * len(pins), repr(got))
    got = introspect(port, main["key"], state["beta_gw"], tenant=OTHER)
    res.check("T04: acme's key introspected by beta's client at beta: exactly {\"active\": false}",
              got == (200, INACTIVE), repr(got))
    got = introspect(port, beta["key"], env.clients["svc"])
    res.check("T04: beta's key introspected at acme: exactly {\"active\": false}", got == (200, INACTIVE), repr(got))
    got = introspect(port, beta["key"], state["beta_gw"], tenant=OTHER)
    res.check("beta's key introspected at beta: active, sub beta's alice",
              got[0] == 200 and got[1].get("active") is True and got[1].get("sub") == state["beta_alice"], repr(got))
    st, _, listed, _ = listing(port, beta_token, tenant=OTHER)
    res.check("T04: beta's alice lists only beta's key", st == 200 and [k.get("id") for k in listed.get("api_keys", [])]
              == [beta["id"]], repr(listed))
    res.check("T04: acme's key id deleted through beta: 404", delete(port, beta_token, main["id"], tenant=OTHER) == 404)


def check_logout_all(res, env, port, state):
    pins = state["pins"]
    token = user_token(res, env, state, port, "lou")
    body = new_key(env, state, port, token, "survives logout-all")
    key = body["key"]
    ok, got = cached_everywhere(pins, key)
    res.check("logout-all: the key verifies on every shard first", ok, repr(got))
    st = call(port, "POST", "/t/%s/api/v1/auth/logout-all" % TENANT, b"", bearer(token))[0]
    res.check("logout-all: 204", st == 204, repr(st))
    res.check("logout-all: the session's access token is refused", verify(port, token)[0] == 401)
    got = statuses(pins, key)
    res.check("logout-all ends sessions, not keys: the key still 200 on every shard", got == [200] * len(pins),
              repr(got))
    got = introspect(port, key, env.clients["svc"])
    res.check("logout-all: the key still active at introspection", got[0] == 200 and got[1].get("active") is True,
              repr(got))
    state["lou_key"], state["lou_token"] = key, token


def check_cap(res, env, port, state):
    token, uid = user_token(res, env, state, port, "hoarder"), env.users["hoarder"]
    made, answers = [], []
    for i in range(KEYS_MAX):
        st, _, body, _ = create(port, token, {"name": "bulk-%03d" % i})
        answers.append(st)
        if st == 201:
            made.append(body["id"])
            state["keys"].append(body["key"])
    res.check("cap: %d keys made in a loop: 201 each" % KEYS_MAX, answers == [201] * KEYS_MAX,
              repr(sorted(set(answers))))
    st, _, _, raw = create(port, token, {"name": "one too many"})
    res.check("cap: the %dst live key: 409" % (KEYS_MAX + 1), st == 409, repr((st, raw[:200])))
    live = env.sql("SELECT count(*) FROM api_keys WHERE user_id = '%s' AND revoked_at IS NULL" % uid)
    res.check("cap: ... nothing stored (%d live keys)" % KEYS_MAX, live == str(KEYS_MAX), live)
    st, _, body, _ = listing(port, token)
    res.check("cap: the list holds all %d, newest first" % KEYS_MAX,
              st == 200 and [k.get("id") for k in body.get("api_keys", [])] == list(reversed(made)),
              "%s, %d listed" % (st, len(body.get("api_keys", []))))
    freed = delete(port, token, made[0]) if made else None
    st, _, body, _ = create(port, token, {"name": "again"})
    if st == 201:
        state["keys"].append(body["key"])
    res.check("cap: a revoked key frees its place (DELETE 204, then 201)", freed == 204 and st == 201,
              repr((freed, st)))
    res.check("cap: ... and the next is 409 again", create(port, token, {"name": "over again"})[0] == 409)


RACE_BEFORE = 90   # keys racer holds before the concurrent mints
RACE_AT_ONCE = 30  # mints at once: only KEYS_MAX - RACE_BEFORE of them may succeed


def check_cap_race(res, env, port, state):
    """The cap under concurrency: mints racing on one user's last places get exactly those."""
    token, uid = user_token(res, env, state, port, "racer"), env.users["racer"]
    for i in range(RACE_BEFORE):
        new_key(env, state, port, token, "before-%02d" % i)
    answers = [None] * RACE_AT_ONCE
    go = threading.Event()

    def mint(i):
        go.wait()
        st, _, body, _ = create(port, token, {"name": "race-%02d" % i})
        answers[i] = st
        if st == 201:
            state["keys"].append(body["key"])

    threads = [threading.Thread(target=mint, args=(i,)) for i in range(RACE_AT_ONCE)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(60)
    wins = answers.count(201)
    res.check("cap race: %d mints at once with %d places left: exactly %d are 201, the rest 409"
              % (RACE_AT_ONCE, KEYS_MAX - RACE_BEFORE, KEYS_MAX - RACE_BEFORE),
              wins == KEYS_MAX - RACE_BEFORE and answers.count(409) == RACE_AT_ONCE - wins,
              repr(sorted(answers, key=str)))
    live = env.sql("SELECT count(*) FROM api_keys WHERE user_id = '%s' AND revoked_at IS NULL" % uid)
    res.check("cap race: ... %d live keys stored, not more" % KEYS_MAX, live == str(KEYS_MAX), live)


def check_first_party(res, env, port, state):
    """Only a first-party client's token mints: a third party's delegated token must not turn
    into a key that outlives its grant."""
    app = env.clients["app"]["client_id"]
    token = user_token(res, env, state, port, "bob")
    env.sql("UPDATE clients SET first_party = false WHERE client_id = '%s'" % app)
    try:
        st, _, _, raw = create(port, token, {"name": "third party"})
    finally:
        env.sql("UPDATE clients SET first_party = true WHERE client_id = '%s'" % app)
    res.check("a token of a client that is not first-party: 403, nothing made", st == 403
              and env.sql("SELECT count(*) FROM api_keys WHERE name = 'third party'") == "0", repr((st, raw[:200])))


def check_client_narrowed(res, env, port, state):
    """Narrowing the client narrows its keys: the scope answered is what the client still holds."""
    app = env.clients["app"]["client_id"]
    token = user_token(res, env, state, port, "bob")
    body = new_key(env, state, port, token, "narrowed", scope="read write")
    env.sql("UPDATE clients SET scopes = '{read}' WHERE client_id = '%s'" % app)
    try:
        st, got = introspect(port, body["key"], env.clients["svc"])
        wide = verify(port, body["key"], query={"scope": "write"})[0]
    finally:
        env.sql("UPDATE clients SET scopes = '{read,write}' WHERE client_id = '%s'" % app)
    res.check("a client narrowed to read: its key minted with \"read write\" introspects with scope read",
              st == 200 and got.get("active") is True and got.get("scope") == "read", repr((st, got)))
    res.check("... and /verify?scope=write is 403", wide == 403, repr(wide))


# ---------------------------------------------------------------------------- later servers

def check_reread(res, env, state):
    """A fresh server: every shard reads keys and revocations from Postgres again."""
    srv = env.server(**SERVER_ENV)
    state["servers"].append(srv)
    pins = pinned_all(srv.port)
    try:
        got = statuses(pins, state["lou_key"])
        res.check("logout-all: a fresh server's every shard reads the key again: 200 everywhere",
                  got == [200] * len(pins), repr(got))
        res.check("logout-all: ... where the session's access token is refused",
                  verify(srv.port, state["lou_token"])[0] == 401)
        orphans = state.get("orphans", {})
        for label, key in (("revoked", state.get("revoked_key")), ("expired", state.get("expired_key")),
                           ("disabled owner's", orphans.get("disabled owner")),
                           ("deleted owner's", orphans.get("deleted owner"))):
            got = statuses(pins, key) if key else None
            res.check("K04: a fresh server: the %s key 401 on every shard" % label, got == [401] * len(pins), repr(got))
    finally:
        close_all(pins)
    check_clean_exit(res, srv, "fresh server exits 0 on SIGTERM, no sanitizer report")


def check_k07(res, env, state):
    srv = env.server(TESSERA_RATE_ADDRESS_PER_S=K07_RATE, TESSERA_RATE_BURST_S=K07_BURST_S, **SERVER_ENV)
    state["servers"].append(srv)
    port, valid = srv.port, state["main"]["key"]
    pins = pinned_all(port)
    try:
        ok, got = cached_everywhere(pins, valid, one_by_one=True)
        res.check("K07: a valid key verifies on every shard (cached) (setup)", ok, repr(got))
        time.sleep(K07_BURST_S + 0.3)  # the address's bucket full again
        sent, answers, first = [], [], None
        start = time.monotonic()
        while len(answers) < K07_MAX_TRIES:
            key = random_key()
            resp = verify(port, key)
            sent.append(key)
            answers.append(resp[0])
            if resp[0] == 429:
                first = resp
                break
        elapsed = time.monotonic() - start
        state["presented"] += sent
        passed = answers.count(401)
        res.check("K07: well-formed wrong keys: 401, then 429 once the address's bucket is spent",
                  answers[0] == 401 and first is not None and set(answers[:-1]) == {401}
                  and passed <= K07_RATE * K07_BURST_S + int(elapsed * K07_RATE) + 2, repr(answers))
        h = first[1] if first else []
        res.check("K07: the 429 has Retry-After, RateLimit-Policy \"address\";q=%d;w=1 and RateLimit" % K07_RATE,
                  (hdr(h, "retry-after") or "").isdigit() and int(hdr(h, "retry-after")) >= 1
                  and hdr(h, "ratelimit-policy") == '"address";q=%d;w=1' % K07_RATE
                  and (hdr(h, "ratelimit") or "").startswith('"address";r=0;t='), repr(h))
        # 3 x PINS requests at once: far more than the bucket refills meanwhile (K07_RATE a
        # second), so had they taken from it most would be 429.
        rounds = [statuses(pins, valid) for _ in range(3)]
        res.check("K07: with the bucket spent, the cached valid key: 200 on every shard, three rounds "
                  "(none took from the bucket)",
                  rounds == [[200] * len(pins)] * 3, repr(rounds))
        got = [verify(port, key)[0] for _, key in malformed_keys()[:6]]
        res.check("K02/K07: malformed keys with the bucket spent: 401, not 429 (no bucket, no store)",
                  got == [401] * len(got), repr(got))
        check_refused_rows(res, env, sent[:-1])
        check_audit_written(res, port, "K07 server")
    finally:
        close_all(pins)
    check_clean_exit(res, srv, "K07 server exits 0 on SIGTERM, no sanitizer report")


def check_audit_written(res, port, label):
    """Every audit event queued was written: none dropped (a batch Postgres refused, e.g. for a
    value a CHECK constraint does not allow, is dropped whole, other events with it)."""
    settled = metric_zero(port, "tessera_audit_pending")
    dropped = metric(port, 'tessera_audit_events_total{outcome="dropped"}')
    res.check("%s: every audit event written, none dropped" % label, settled and dropped == 0,
              "settled %s, dropped %r" % (settled, dropped))


def check_refused_rows(res, env, refused):
    """One api_key_refused row per key answered 401, naming its prefix and nothing more."""
    statement = ("SELECT actor_kind || '|' || details::text FROM audit_log WHERE action = 'api_key_refused' "
                 "ORDER BY seq")

    def count_for(out, key):
        return len([line for line in out.split("\n") if key[3:11] in line])

    out = sql_until(env, statement, lambda o: all(count_for(o, k) >= 1 for k in refused))
    rows = [line.split("|", 1) for line in out.split("\n") if line]
    mine = [r for r in rows if any(k[3:11] in r[-1] for k in refused)]
    res.check("K07: one audit row api_key_refused per well-formed key refused 401",
              refused and all(count_for(out, k) == 1 for k in refused),
              "%d keys, %d rows: %r" % (len(refused), len(rows), out[-600:]))
    res.check("K07: ... actor_kind address", mine and all(r[0] == "address" for r in mine), repr(mine[:2]))

    def names_prefix(details, key):
        try:
            return key[3:11] in json.loads(details).values()
        except (ValueError, AttributeError):
            return False

    res.check("K07/K05: ... details name the prefix and hold nothing more of the key",
              mine and all(any(names_prefix(r[-1], k) for k in refused) for r in mine)
              and not any(leaks(out, k) for k in refused), repr(mine[:2]))


def log_runs(text):
    """The distinct runs of base64url characters (8 or more) in text, one a line: a key or any
    piece of one can only appear inside one of them, and the runs are far fewer than the log."""
    return "\n".join(set(re.findall(r"[A-Za-z0-9_-]{8,}", text)))


def check_k05(res, state):
    servers = state["servers"]
    texts = [srv.stderr_text() for srv in servers]
    res.check("K05: the logs saw the API-key requests (access lines for /me/api-keys and /verify)",
              texts and '"path":"%s"' % keys_path() in texts[0] and '"path":"/t/%s/verify"' % TENANT in texts[0],
              "%d bytes" % len(texts[0]) if texts else "no server")
    runs = [log_runs(text) for text in texts]
    for label, secrets in (("no created key, its 43-char secret or anything past its prefix", state["keys"]),
                           ("no wrong key presented (past its prefix)", state["presented"])):
        found = [k[:11] for k in secrets for text in runs if leaks(text, k)]
        res.check("K05: %s in any server's stderr (every server at debug)" % label, secrets and not found,
                  "%d keys, %d servers: %r" % (len(secrets), len(servers), found[:5]))
    found = [t[:20] for t in state["tokens"] for text in texts if t and t in text]
    res.check("K05: no user access token (an Authorization value) in any server's stderr",
              state["tokens"] and not found, repr(found[:3]))


# ---------------------------------------------------------------------------- main

def run_all(res, env):
    state = {"servers": []}
    prepare(env, state)
    srv = env.server(**SERVER_ENV)
    state["servers"].append(srv)
    port = srv.port
    try:
        state["alice"] = user_token(res, env, state, port, "alice")
        state["bob"] = user_token(res, env, state, port, "bob")
        state["issuer"] = jwt_claims(state["alice"]).get("iss") if state["alice"] else None
        state["admin_token"] = client_token(port, env.clients["admin"])
        state["pins"] = pinned_all(port)
        res.run("create", check_create, res, env, port, state)
        res.run("scopes", check_scopes, res, env, port, state)
        res.run("create refusals", check_create_refusals, res, env, port, state)
        res.run("bearer refusals", check_bearer_refusals, res, env, port, state)
        res.run("verify", check_verify, res, env, port, state)
        res.run("introspection", check_introspection, res, env, port, state)
        res.run("K01/K02", check_unknown, res, env, port, state)
        res.run("list", check_list, res, env, port, state)
        res.run("K04 revoke", check_delete, res, env, port, state)
        res.run("K04 expiry", check_expired, res, env, port, state)
        res.run("K04 disabled owner", check_owner, res, env, port, state, "dora", "POST", "/disable", "disabled owner")
        res.run("K04 deleted owner", check_owner, res, env, port, state, "dell", "DELETE", "", "deleted owner")
        res.run("T04/T09", check_tenants, res, env, port, state)
        res.run("logout-all", check_logout_all, res, env, port, state)
        res.run("cap", check_cap, res, env, port, state)
        res.run("cap race", check_cap_race, res, env, port, state)
        res.run("first party", check_first_party, res, env, port, state)
        res.run("client narrowed", check_client_narrowed, res, env, port, state)
        close_all(state["pins"])
        check_audit_written(res, port, "main server")
        check_clean_exit(res, srv)
    finally:
        srv.kill()
    res.run("fresh server", check_reread, res, env, state)
    res.run("K07", check_k07, res, env, state)
    for other in state["servers"]:
        other.kill()
    res.run("K05", check_k05, res, state)


def main():
    run_with_env("personal API keys", "api keys", run_all)


if __name__ == "__main__":
    main()
