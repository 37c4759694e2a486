#!/usr/bin/env python3
"""A personal API key's last use, and the tenant admin's view of a user's keys (DESIGN §4 "API
key"; SECURITY K04, T01, T08): last_used_at in GET /t/{tenant}/api/v1/me/api-keys, and
GET /t/{tenant}/api/v1/users/{id}/api-keys, DELETE /t/{tenant}/api/v1/users/{id}/api-keys/{key}
with a client's own client_credentials token holding users:read / users:write (the admin of
test_admin_users.py).

Its own Postgres cluster; tenants acme (users, the first-party client app with scope
"read write", svc allowed to introspect, an admin client with users:read users:write and a
reader with users:read only) and beta (its own app, admin client and user). One server with
FOUR shards; connections pinned to every shard (test_api_keys.pinned_all) show what each
shard's cache answers. Checks:
- last_used_at: a new key's is null, in /me/api-keys and in the admin's listing; a use at
  /verify stamps it (the per-shard UPDATE coalesced AUTH_APIKEY_USES_FLUSH_MS = 1 s after the
  use; polled up to STAMP_WAIT_S): an integer of Unix seconds, >= created_at, within
  CLOCK_SLACK_S of now, the same value in the admin's listing; so does a use at introspection;
  a refused key gets no stamp (revoked, expired, and a real prefix with a wrong remainder: the
  key whose prefix it bears stays null), checked STAMP_SETTLE_S after the refusals; per key and
  shard a stamp is noted at most once per AUTH_APIKEY_USE_STEP_S = 60 s: on one keep-alive
  connection (one shard) the key is used, the stamp appears, STEP_GAP_S later it is used again
  and STAMP_SETTLE_S after that the stamp has not moved;
- the admin's listing: 200 {"api_keys": [...]} with Cache-Control no-store, every entry exactly
  the members of /me/api-keys (id, prefix, name, scope, client_id, created_at, expires_at,
  last_used_at) and the same entries, only live keys (not the revoked, not the expired), newest
  first, never a key, its secret or its digest; with users:read alone and with the admin's
  token; a user with no key: []; each user's only (bob's key never under alice); a user
  disabled by the admin: still listed;
- the listing's refusals: 404 application/problem+json for a deleted user, an unknown id,
  malformed ids (not a UUID, one character short, one too many), beta's user at acme (T08) and
  acme's user at beta by beta's admin (T08); beta's admin token at acme: 401 (T01); no token,
  a garbage token, a user's access token, an API key: 401 Bearer error="invalid_token"; a
  client token without users:read: 403 Bearer error="insufficient_scope", scope="users:read";
  an unknown tenant: 404;
- the admin's revoke, before it: no token, a user's token: 401; users:read only and a client
  without users:*: 403 scope="users:write"; 404 application/problem+json for bob's key named
  under alice and alice's under bob (each still verifies, no 'key' revocation row written), an
  unknown key id, a malformed key id, a malformed user id, beta's user and key at acme, beta's
  key under acme's user, acme's user and key at beta by beta's admin (T08); the key still 200
  on every shard after all of them;
- the admin's revoke, K04: the key verified on every shard first, then DELETE with users:write:
  204; 401 on every shard within PROPAGATION_S of the 204 (the first question after the 204
  already 401); introspection exactly {"active": false}; a 'key' revocation row; listed neither
  by the admin nor at /me/api-keys; an audit row api_key_revoked, actor_kind client, actor_id
  the admin's client_id, target_kind api_key, target_id the key, details->>'prefix' the key's
  prefix and nothing more of the key; the same DELETE again: 404;
- every audit event the server queued was written (none dropped);
- the server exits 0 on SIGTERM with no sanitizer report.
Skips when Postgres is not installed.
"""
import time
import uuid

from tessera_harness import check_clean_exit
from test_admin_users import INVALID, admin_call, client_token, hdr
from test_api_keys import (CLOCK_SLACK_S, INACTIVE, LISTED_KEYS, SHARDS, ask, cached_everywhere,
                           check_audit_written, check_refused_everywhere, close_all, delete, leaks, listing, new_key,
                           pinned_all, random_key, revocation_rows, sha256_forms, sql_until, statuses, user_token,
                           verify, verify_raw)
from test_login import PASSWORD, TENANT, introspect, jbody, login, run_with_env
from test_revocation import Pin

OTHER = "beta"
ADMIN_SCOPE = "users:read users:write"
READ_SCOPE = "users:read"
USES_FLUSH_S = 1.0           # auth AUTH_APIKEY_USES_FLUSH_MS: a shard's noted uses are written this long after
USE_STEP_S = 60              # auth AUTH_APIKEY_USE_STEP_S: a key's use noted at most once this often per shard
STAMP_WAIT_S = 10.0          # how long a stamp may take to show (the flush, a loaded sanitizer build)
STAMP_SETTLE_S = USES_FLUSH_S + 2.0  # a stamp that was going to be written is there by then
STEP_GAP_S = 2               # between the two uses on one connection (well within USE_STEP_S)
EXPIRES_S = 2                # the expiring key's expires_in; the test sleeps EXPIRES_S + 1
PROBLEM = "application/problem+json"
FORBIDDEN = 'Bearer error="insufficient_scope", scope="%s"'
SERVER_ENV = dict(TESSERA_SHARDS=SHARDS)


def admin_keys_path(uid, tenant=TENANT, rest=""):
    return "/t/%s/api/v1/users/%s/api-keys%s" % (tenant, uid, rest)


def admin_listing(port, token, uid, tenant=TENANT):
    """GET /users/{uid}/api-keys: (status, headers, parsed body, raw body)."""
    return admin_call(port, token, "GET", admin_keys_path(uid, tenant))


def admin_revoke(port, token, uid, kid, tenant=TENANT):
    """DELETE /users/{uid}/api-keys/{kid}: (status, headers, parsed body, raw body)."""
    return admin_call(port, token, "DELETE", admin_keys_path(uid, tenant, "/" + kid))


def ids_of(body):
    return [k.get("id") for k in body.get("api_keys", [])] if isinstance(body, dict) else []


def problem(headers):
    return (hdr(headers, "content-type") or "").startswith(PROBLEM)


MISSING = "missing"  # stamp_of: the key is not listed, or the item has no last_used_at


def stamp_of(port, token, kid):
    """The key's last_used_at in the user's /me/api-keys."""
    _, _, body, _ = listing(port, token)
    item = next((k for k in body.get("api_keys", []) if k.get("id") == kid), None)
    return item.get("last_used_at", MISSING) if item is not None else MISSING


def wait_stamp(port, token, kid, timeout=STAMP_WAIT_S):
    """(the key's last_used_at once it is not null, or the last one read; seconds waited)."""
    start = time.monotonic()
    stamp = stamp_of(port, token, kid)
    while stamp is None and time.monotonic() - start < timeout:
        time.sleep(0.2)
        stamp = stamp_of(port, token, kid)
    return stamp, time.monotonic() - start


def stamp_ok(stamp, created):
    """An integer of Unix seconds, not before the key was made, near this machine's clock."""
    return (type(stamp) is int and type(created) is int and stamp >= created
            and abs(stamp - time.time()) < CLOCK_SLACK_S)


# ---------------------------------------------------------------------------- setup

def prepare(env, state):
    for name in ("alice", "bob", "carol", "dora", "dell"):
        env.user(name)
    env.clients["admin"] = env.admin("admin", "client", "create", "--tenant", TENANT, "--name", "admin",
                                     "--scope", ADMIN_SCOPE, "--grant", "client_credentials")
    state["reader"] = env.admin("admin", "client", "create", "--tenant", TENANT, "--name", "reader",
                                "--scope", READ_SCOPE, "--grant", "client_credentials")
    env.admin("admin", "tenant", "create", OTHER)
    env.admin("admin", "keys", "rotate", "--tenant", OTHER)
    state["beta_app"] = env.admin("admin", "client", "create", "--tenant", OTHER, "--name", "app",
                                  "--scope", "read write", "--first-party", "--grant", "password")
    state["beta_admin"] = env.admin("admin", "client", "create", "--tenant", OTHER, "--name", "admin",
                                    "--scope", ADMIN_SCOPE, "--grant", "client_credentials")
    args = ["admin", "user", "create", "--tenant", OTHER, "--username", "alice", "--password-stdin"]
    state["beta_alice"] = env.admin(*args, stdin=(PASSWORD + "\n").encode())["id"]
    state["keys"] = []          # every key created (user_token / new_key keep them)
    state["presented"] = []     # well-formed wrong keys sent
    state["tokens"] = []        # the users' access tokens
    state["alice_live"] = []    # alice's live key ids, oldest first
    state["alice_secrets"] = []  # every key alice was given


def alice_key(env, state, port, label, **fields):
    body = new_key(env, state, port, state["alice"], label, **fields)
    state["alice_live"].append(body["id"])
    state["alice_secrets"].append(body["key"])
    return body


def beta_key(res, env, state, port):
    """beta's alice's key, minted at beta."""
    st, _, data = login(port, {"username": "alice", "password": PASSWORD, "client_id": state["beta_app"]["client_id"]},
                        tenant=OTHER)
    token = jbody(data).get("access_token", "")
    res.check("beta's alice logs in (setup)", st == 200, repr((st, data[:200])))
    state["tokens"].append(token)
    return new_key(env, state, port, token, "beta's", tenant=OTHER)


# ---------------------------------------------------------------------------- last_used_at

def check_last_used(res, env, port, state):
    token, uid, svc = state["alice"], env.users["alice"], env.clients["svc"]
    used = alice_key(env, state, port, "stamped at verify")
    stamp = stamp_of(port, token, used["id"])
    res.check("last_used_at: a new key's is null in /me/api-keys", stamp is None, repr(stamp))
    _, _, body, _ = admin_listing(port, state["admin_token"], uid)
    item = next((k for k in body.get("api_keys", []) if k.get("id") == used["id"]), {})
    res.check("last_used_at: ... and null in the admin's listing", "last_used_at" in item
              and item["last_used_at"] is None, repr(item))
    st = verify(port, used["key"])[0]
    res.check("last_used_at: the key used at /verify: 200 (setup)", st == 200, repr(st))
    stamp, took = wait_stamp(port, token, used["id"])
    print("MEASURE last_used_at after a /verify: shown %.2f s after the use" % took, flush=True)
    res.check("last_used_at: a use at /verify stamps it within %.0f s" % STAMP_WAIT_S, stamp not in (None, MISSING),
              repr(stamp))
    res.check("last_used_at: an integer of Unix seconds, >= created_at, within %d s of now" % CLOCK_SLACK_S,
              stamp_ok(stamp, used.get("created_at")), "%r, created_at %r, now %d"
              % (stamp, used.get("created_at"), time.time()))
    _, _, body, _ = admin_listing(port, state["admin_token"], uid)
    item = next((k for k in body.get("api_keys", []) if k.get("id") == used["id"]), {})
    res.check("last_used_at: the admin's listing shows the same value", item.get("last_used_at", MISSING) == stamp,
              "%r, /me %r" % (item, stamp))

    looked = alice_key(env, state, port, "stamped at introspection")
    st, got = introspect(port, looked["key"], svc)
    res.check("last_used_at: the key introspected: active (setup)", st == 200 and got.get("active") is True,
              repr((st, got)))
    stamp, took = wait_stamp(port, token, looked["id"])
    print("MEASURE last_used_at after an introspection: shown %.2f s after the use" % took, flush=True)
    res.check("last_used_at: a use at introspection stamps it within %.0f s" % STAMP_WAIT_S,
              stamp_ok(stamp, looked.get("created_at")), "%r, created_at %r" % (stamp, looked.get("created_at")))

    # Refused keys: revoked, expired, and a real prefix with a wrong remainder.
    expiring = new_key(env, state, port, token, "expires unused", expires_in=EXPIRES_S)
    revoked = new_key(env, state, port, token, "revoked unused")
    state["alice_secrets"] += [expiring["key"], revoked["key"]]
    res.check("last_used_at: the key revoked unused: DELETE 204 (setup)",
              delete(port, token, revoked["id"]) == 204)
    bystander = alice_key(env, state, port, "its prefix borrowed")
    wrong = bystander["key"][:11] + random_key()[11:]
    state["presented"].append(wrong)
    time.sleep(EXPIRES_S + 1)
    for label, key in (("revoked", revoked["key"]), ("expired", expiring["key"]),
                       ("real prefix, wrong remainder", wrong)):
        st = verify(port, key)[0]
        res.check("last_used_at: the %s key at /verify: 401" % label, st == 401, repr(st))
        got = introspect(port, key, svc)
        res.check("last_used_at: the %s key at introspection: {\"active\": false}" % label, got == (200, INACTIVE),
                  repr(got))
    time.sleep(STAMP_SETTLE_S)
    ids = "', '".join([revoked["id"], expiring["id"], bystander["id"]])
    rows = env.sql("SELECT name || '|' || coalesce(last_used_at::text, 'null') FROM api_keys WHERE id IN ('%s') "
                   "ORDER BY name" % ids)
    res.check("last_used_at: no stamp for a refused key (revoked, expired, nor the key whose prefix a wrong "
              "key bore), %.0f s after the refusals" % STAMP_SETTLE_S,
              rows == "expires unused|null\nits prefix borrowed|null\nrevoked unused|null", rows)
    stamp = stamp_of(port, token, bystander["id"])
    res.check("last_used_at: ... the bystander key still null in /me/api-keys", stamp is None, repr(stamp))


def check_use_step(res, env, port, state):
    """At most one stamp per key and shard every USE_STEP_S: a second use on the same connection
    (the same shard) STEP_GAP_S later does not move it."""
    token = state["alice"]
    body = alice_key(env, state, port, "used twice on one shard")
    pin = Pin(port)
    try:
        first = ask([pin], verify_raw(body["key"]))[0]
        res.check("use step: the first use on one keep-alive connection: 200 (setup)",
                  first is not None and first.status == 200, repr(first))
        stamp, _ = wait_stamp(port, token, body["id"])
        res.check("use step: the first use stamps it", stamp_ok(stamp, body.get("created_at")), repr(stamp))
        time.sleep(STEP_GAP_S)
        second = ask([pin], verify_raw(body["key"]))[0]
        res.check("use step: %d s later, the second use on the same connection: 200 (setup)" % STEP_GAP_S,
                  second is not None and second.status == 200, repr(second))
        time.sleep(STAMP_SETTLE_S)
        again = stamp_of(port, token, body["id"])
        res.check("use step: the same shard within %d s: the stamp has not moved (%.0f s after the second use)"
                  % (USE_STEP_S, STAMP_SETTLE_S), again == stamp and stamp is not None, "%r then %r" % (stamp, again))
    finally:
        pin.close()


# ---------------------------------------------------------------------------- the admin's listing

def same_listings(port, state, uid, token, tries=20):
    """/me/api-keys and the admin's listing of the same user, read until they agree (a stamp
    may land between the two reads): (me, admin) bodies."""
    for _ in range(tries):
        _, _, me, _ = listing(port, token)
        _, _, admin, _ = admin_listing(port, state["reader_token"], uid)
        if me == admin:
            break
        time.sleep(0.2)
    return me, admin


def check_admin_list(res, env, port, state):
    uid, reader, admin = env.users["alice"], state["reader_token"], state["admin_token"]
    st, h, body, raw = admin_listing(port, reader, uid)
    ids = ids_of(body)
    items = body.get("api_keys", []) if isinstance(body, dict) else []
    res.check("admin list: users:read: 200 {\"api_keys\": [...]}, no-store",
              st == 200 and sorted(body) == ["api_keys"] and hdr(h, "cache-control") == "no-store",
              repr((st, h, raw[:200])))
    res.check("admin list: every item exactly id, prefix, name, scope, client_id, created_at, expires_at, "
              "last_used_at", items and all(sorted(k) == LISTED_KEYS for k in items), repr(items[:1]))
    want = list(reversed(state["alice_live"]))
    res.check("admin list: only alice's live keys (not the revoked, not the expired), newest first", ids == want,
              "%r\n%r" % (ids, want))
    me, listed = same_listings(port, state, uid, state["alice"])
    res.check("admin list: the same entries as her /me/api-keys, every member (last_used_at too)",
              me == listed and me.get("api_keys"), "%r\n%r" % (me, listed))
    text = raw.decode("utf-8", "replace")
    res.check("admin list: never a key, its secret or its digest",
              not any(leaks(text, k) or any(d in text for d in sha256_forms(k)) for k in state["alice_secrets"]),
              text[:300])
    st, _, body, _ = admin_listing(port, admin, uid)
    res.check("admin list: the admin's token (users:read users:write): 200, the same keys",
              st == 200 and ids_of(body) == want, repr((st, ids_of(body))))
    st, _, body, raw = admin_listing(port, reader, env.users["carol"])
    res.check("admin list: a user with no key: 200 {\"api_keys\": []}", st == 200 and body == {"api_keys": []},
              repr((st, raw[:200])))
    bob = new_key(env, state, port, state["bob"], "bob's")
    state["bob_key"] = bob
    st, _, body, _ = admin_listing(port, reader, env.users["bob"])
    res.check("admin list: bob's listing holds his key only", st == 200 and ids_of(body) == [bob["id"]],
              repr((st, body)))
    _, _, body, _ = admin_listing(port, reader, uid)
    res.check("admin list: ... never under alice", bob["id"] not in ids_of(body), repr(ids_of(body)))

    dora = new_key(env, state, port, user_token(res, env, state, port, "dora"), "dora's")
    st = admin_call(port, admin, "POST", "/t/%s/api/v1/users/%s/disable" % (TENANT, env.users["dora"]))[0]
    res.check("admin list: dora disabled by the admin: 204 (setup)", st == 204, repr(st))
    st, _, body, _ = admin_listing(port, reader, env.users["dora"])
    res.check("admin list: a disabled user's keys are still listed", st == 200 and ids_of(body) == [dora["id"]],
              repr((st, body)))
    new_key(env, state, port, user_token(res, env, state, port, "dell"), "dell's")
    st = admin_call(port, admin, "DELETE", "/t/%s/api/v1/users/%s" % (TENANT, env.users["dell"]))[0]
    res.check("admin list: dell deleted by the admin: 204 (setup)", st == 204, repr(st))

    state["beta_key"] = beta_key(res, env, state, port)
    st, _, body, _ = admin_listing(port, state["beta_admin_token"], state["beta_alice"], OTHER)
    res.check("admin list: beta's admin lists beta's alice at beta: her key (setup)",
              st == 200 and ids_of(body) == [state["beta_key"]["id"]], repr((st, body)))
    for label, tok, user, tenant in (("a deleted user", reader, env.users["dell"], TENANT),
                                     ("an unknown id", reader, str(uuid.uuid4()), TENANT),
                                     ("a malformed id (not a UUID)", reader, "not-a-uuid", TENANT),
                                     ("a malformed id (one character short)", reader, uid[:-1], TENANT),
                                     ("a malformed id (one character too many)", reader, uid + "0", TENANT),
                                     ("T08: beta's user at acme", reader, state["beta_alice"], TENANT),
                                     ("T08: acme's alice at beta, by beta's admin", state["beta_admin_token"], uid,
                                      OTHER)):
        st, h, _, raw = admin_listing(port, tok, user, tenant)
        res.check("admin list: %s: 404 %s" % (label, PROBLEM), st == 404 and problem(h), repr((st, h, raw[:200])))
    st, h, _, _ = admin_listing(port, state["beta_admin_token"], uid)
    res.check("admin list: T01: beta's admin token at acme: 401", st == 401 and hdr(h, "www-authenticate") == INVALID,
              repr((st, h)))
    for label, tok in (("no token", None), ("a garbage token", "garbage"), ("alice's access token", state["alice"]),
                       ("an API key", state["alice_secrets"][0])):
        st, h, _, _ = admin_listing(port, tok, uid)
        res.check("admin list: %s: 401 %s" % (label, INVALID), st == 401 and hdr(h, "www-authenticate") == INVALID,
                  repr((st, h)))
    st, h, _, _ = admin_listing(port, state["svc_token"], uid)
    res.check("admin list: a client token without users:read: 403 %s" % (FORBIDDEN % READ_SCOPE),
              st == 403 and hdr(h, "www-authenticate") == FORBIDDEN % READ_SCOPE, repr((st, h)))
    st = admin_listing(port, reader, uid, "nope")[0]
    res.check("admin list: an unknown tenant: 404", st == 404, repr(st))


# ---------------------------------------------------------------------------- the admin's revoke

def check_admin_revoke(res, env, port, state):
    uid, bob_uid, admin = env.users["alice"], env.users["bob"], state["admin_token"]
    bob, beta = state["bob_key"], state["beta_key"]
    pins = pinned_all(port)
    try:
        body = alice_key(env, state, port, "revoked by the admin")
        key, kid = body["key"], body["id"]
        ok, got = cached_everywhere(pins, key)
        res.check("admin revoke: the key verifies on every shard first (cached)", ok, repr(got))
        res.check("admin revoke: introspection active first",
                  introspect(port, key, env.clients["svc"])[1].get("active") is True)
        for label, tok in (("no token", None), ("alice's access token", state["alice"])):
            st, h, _, _ = admin_revoke(port, tok, uid, kid)
            res.check("admin revoke: %s: 401 %s" % (label, INVALID),
                      st == 401 and hdr(h, "www-authenticate") == INVALID, repr((st, h)))
        for label, tok in (("users:read only", state["reader_token"]),
                           ("a client without users:*", state["svc_token"])):
            st, h, _, _ = admin_revoke(port, tok, uid, kid)
            res.check("admin revoke: %s: 403 %s" % (label, FORBIDDEN % "users:write"),
                      st == 403 and hdr(h, "www-authenticate") == FORBIDDEN % "users:write", repr((st, h)))
        for label, user, key_id, tenant, tok in (
                ("bob's key named under alice", uid, bob["id"], TENANT, admin),
                ("alice's key named under bob", bob_uid, kid, TENANT, admin),
                ("an unknown key id", uid, str(uuid.uuid4()), TENANT, admin),
                ("a malformed key id", uid, "not-a-uuid", TENANT, admin),
                ("a malformed key id (one character short)", uid, kid[:-1], TENANT, admin),
                ("a malformed user id", "not-a-uuid", kid, TENANT, admin),
                ("T08: beta's user and key at acme", state["beta_alice"], beta["id"], TENANT, admin),
                ("T08: beta's key under acme's alice", uid, beta["id"], TENANT, admin),
                ("T08: acme's alice and key at beta, by beta's admin", uid, kid, OTHER, state["beta_admin_token"])):
            st, h, _, raw = admin_revoke(port, tok, user, key_id, tenant)
            res.check("admin revoke: %s: 404 %s" % (label, PROBLEM), st == 404 and problem(h), repr((st, h, raw[:200])))
        res.check("admin revoke: ... bob's key still verifies", verify(port, bob["key"])[0] == 200)
        res.check("admin revoke: ... beta's key still verifies at beta", verify(port, beta["key"], OTHER)[0] == 200)
        got = [revocation_rows(env, k) for k in (kid, bob["id"], beta["id"])]
        res.check("admin revoke: ... no 'key' revocation row written for any of them", got == ["0", "0", "0"],
                  repr(got))
        _, _, listed, _ = admin_listing(port, state["reader_token"], bob_uid)
        res.check("admin revoke: ... bob's key still listed", ids_of(listed) == [bob["id"]], repr(listed))
        got = statuses(pins, key)
        res.check("admin revoke: ... and the key still 200 on every shard", got == [200] * len(pins), repr(got))

        st, _, _, raw = admin_revoke(port, admin, uid, kid)
        t0 = time.monotonic()
        res.check("admin revoke: users:write: 204", st == 204, repr((st, raw[:200])))
        first = check_refused_everywhere(res, "admin revoke", pins, key, t0)
        res.check("admin revoke: the first question after the 204 on every shard: 401 (spread before the 204)", first)
    finally:
        close_all(pins)
    state["alice_live"].remove(kid)
    got = introspect(port, key, env.clients["svc"])
    res.check("admin revoke: introspection exactly {\"active\": false}", got == (200, INACTIVE), repr(got))
    res.check("admin revoke: a revocation row kind 'key' names it", revocation_rows(env, kid) == "1",
              revocation_rows(env, kid))
    _, _, listed, _ = admin_listing(port, state["reader_token"], uid)
    res.check("admin revoke: no longer in the admin's listing", kid not in ids_of(listed)
              and ids_of(listed) == list(reversed(state["alice_live"])), repr(ids_of(listed)))
    _, _, listed, _ = listing(port, state["alice"])
    res.check("admin revoke: no longer in her /me/api-keys", kid not in ids_of(listed), repr(ids_of(listed)))
    audit = sql_until(env, "SELECT actor_kind || '|' || coalesce(actor_id, '') || '|' || coalesce(target_kind, '') "
                      "|| '|' || coalesce(details->>'prefix', '') || '|' || details::text FROM audit_log "
                      "WHERE action = 'api_key_revoked' AND target_id = '%s'" % kid, bool)
    parts = audit.split("|", 4)
    want = ["client", env.clients["admin"]["client_id"], "api_key", key[3:11]]
    res.check("admin revoke: one audit row api_key_revoked, actor the admin's client, target the key, "
              "details->>'prefix' its prefix", len(parts) == 5 and parts[:4] == want and "\n" not in audit,
              "%r, expected %r" % (audit, want))
    res.check("admin revoke: ... its details hold nothing more of the key", len(parts) == 5
              and not leaks(parts[4], key), audit)
    st, h, _, _ = admin_revoke(port, admin, uid, kid)
    res.check("admin revoke: the same DELETE again: 404 %s" % PROBLEM, st == 404 and problem(h), repr((st, h)))


# ---------------------------------------------------------------------------- main

def run_all(res, env):
    state = {}
    prepare(env, state)
    srv = env.server(**SERVER_ENV)
    port = srv.port
    try:
        state["alice"] = user_token(res, env, state, port, "alice")
        state["bob"] = user_token(res, env, state, port, "bob")
        state["admin_token"] = client_token(port, env.clients["admin"])
        state["reader_token"] = client_token(port, state["reader"])
        state["svc_token"] = client_token(port, env.clients["svc"])
        state["beta_admin_token"] = client_token(port, state["beta_admin"], OTHER)
        res.run("last used", check_last_used, res, env, port, state)
        res.run("use step", check_use_step, res, env, port, state)
        res.run("admin list", check_admin_list, res, env, port, state)
        res.run("admin revoke", check_admin_revoke, res, env, port, state)
        check_audit_written(res, port, "server")
        check_clean_exit(res, srv)
    finally:
        srv.kill()


def main():
    run_with_env("API keys: last use, the tenant admin's listing and revoke", "api keys admin", run_all)


if __name__ == "__main__":
    main()
