#!/usr/bin/env python3
"""The tenant admin's users API (auth/admin.c) and self-service deletion (auth/reauth.c), issue 6.

A tenant admin is a client of the tenant with a client_credentials token whose scope carries
users:read / users:write (Auth0 Management API's model). Two tenants, acme and beta, each with
an admin client; checks named by their SECURITY rows where one applies:
- refusals: no token, a garbage token: 401 with WWW-Authenticate Bearer error="invalid_token";
  a user's token (it has a sid) even when its client's scope carries users:read: 401; a token
  without users:read / users:write: 403 with Bearer error="insufficient_scope", scope="…"
  (RFC 6750 §3.1); T01: beta's admin token at acme: 401; T08: acme's admin token with beta's
  user ids: 404 for GET, disable, unlock, delete, and beta's user unchanged; a malformed id and
  an unknown id: 404; a bad limit (0, 101, -1, abc) or cursor: 400; an unknown tenant: 404;
- GET /users: pages of 4 walk every live user of acme exactly once in id order, next_cursor null
  on the last page; every item has exactly id, username, email, email_verified, disabled,
  locked_until, failed_logins, created_at, last_login_at; no hash in any answer; beta's users
  never appear (T08); q finds by a case-insensitive part of the username or the address;
- GET /users/{id}: the user; O20: POST disable → 204; the user's access token refused at /verify
  at once, the refresh token invalid_grant, the right password refused with exactly the answer of
  a wrong password (P01), GET shows disabled; enable → login works again;
- P04: 10 wrong passwords lock an account; the right one is refused; unlock → 204 and the right
  password logs in at once, failed_logins 0;
- DELETE /users/{id} → 204; GET 404, not listed, a second DELETE 404; the token refused, the
  refresh token invalid_grant, login refused as a wrong password; the username registers again;
- each change's audit row (actor_kind client, actor_id the admin's client_id, target the user,
  the request id) is committed with it;
- DELETE /me (auth/reauth.c): no token 401, a client's own token 401, no password 400, not JSON
  415, a wrong password 403 (nothing deleted); the right one 204: the account soft-deleted, the
  token refused, the refresh token invalid_grant, login refused, an audit row user_deleted with
  actor_kind user.
Skips when Postgres is not installed.
"""
import json
import urllib.parse
import uuid

from tessera_harness import check_clean_exit, login_failures_settled
from test_login import PASSWORD, TENANT, basic, call, good_login, jbody, login, verify, run_with_env

OTHER = "beta"
ADMIN_SCOPE = "users:read users:write audit:read"
USER_KEYS = sorted(["id", "username", "email", "email_verified", "disabled", "locked_until",
                    "failed_logins", "created_at", "last_login_at"])
LOCK_THRESHOLD = 10  # auth/auth_int.h AUTH_LOCKOUT_THRESHOLD
PAGE = 4
INVALID = 'Bearer error="invalid_token"'
VOLATILE_HEADERS = ("x-request-id", "date")


def users_path(tenant=TENANT, rest=""):
    return "/t/%s/api/v1/users%s" % (tenant, rest)


def hdr(headers, name):
    for k, v in headers:
        if k == name:
            return v
    return None


def client_token(port, client, tenant=TENANT):
    form = urllib.parse.urlencode({"grant_type": "client_credentials"})
    st, _, data = call(port, "POST", "/t/%s/oauth2/token" % tenant, form,
                       {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(client)})
    if st != 200:
        raise RuntimeError("client_credentials for %s: %s %r" % (client["client_id"], st, data))
    return jbody(data)["access_token"]


def admin_call(port, token, method, path, request_id=None, body=None, content_type=None):
    headers = {}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    if request_id:
        headers["X-Request-Id"] = request_id
    if content_type:
        headers["Content-Type"] = content_type
    status, headers, raw = call(port, method, path, body, headers)
    return status, headers, jbody(raw), raw


def refresh(port, env, refresh_token):
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    st, _, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, urllib.parse.urlencode(form),
                       {"Content-Type": "application/x-www-form-urlencoded",
                        "Authorization": basic(env.clients["app"])})
    return st, jbody(data)


def refusal(resp):
    status, headers, data = resp
    return status, [h for h in headers if h[0] not in VOLATILE_HEADERS], data


def login_answer(env, port, username, password):
    return refusal(login(port, {"username": username, "password": password,
                                "client_id": env.clients["app"]["client_id"]}))


def audit_rows(env, action, target):
    return env.sql("SELECT actor_kind, actor_id, host(ip), request_id FROM audit_log WHERE action = '%s' "
                   "AND target_kind = 'user' AND target_id = '%s' ORDER BY seq" % (action, target))


# ---------------------------------------------------------------------------- setup

def prepare(env, state):
    """acme: the admin client, a read-only one, a first-party app whose scope names users:read,
    the users; beta: its own admin client and a user."""
    env.clients["admin"] = env.admin("admin", "client", "create", "--tenant", TENANT, "--name", "admin",
                                     "--scope", ADMIN_SCOPE, "--grant", "client_credentials")
    state["reader"] = env.admin("admin", "client", "create", "--tenant", TENANT, "--name", "reader",
                                "--scope", "users:read", "--grant", "client_credentials")
    state["sneaky"] = env.admin("admin", "client", "create", "--tenant", TENANT, "--name", "sneaky",
                                "--scope", ADMIN_SCOPE, "--grant", "password", "--first-party")
    for name in ("alice", "bob", "locky", "gone", "selfie"):
        env.user(name)
    env.user("zed", email="Zed.Mail@Example.test")
    for i in range(7):
        env.user("filler%02d" % i)
    env.admin("admin", "tenant", "create", OTHER)
    env.admin("admin", "keys", "rotate", "--tenant", OTHER)
    state["beta_admin"] = env.admin("admin", "client", "create", "--tenant", OTHER, "--name", "admin",
                                    "--scope", ADMIN_SCOPE, "--grant", "client_credentials")
    args = ["admin", "user", "create", "--tenant", OTHER, "--username", "alice", "--password-stdin"]
    state["beta_alice"] = env.admin(*args, stdin=(PASSWORD + "\n").encode())["id"]
    state["acme_id"] = env.sql("SELECT id FROM tenants WHERE slug = '%s'" % TENANT)


# ---------------------------------------------------------------------------- refusals

def check_refusals(res, env, port, state):
    tok = state["token"]
    st, h, _, _ = admin_call(port, None, "GET", users_path())
    res.check("no token: 401 invalid_token", st == 401 and hdr(h, "www-authenticate") == INVALID, repr((st, h)))
    st, h, _, _ = admin_call(port, "garbage", "GET", users_path())
    res.check("a garbage token: 401 invalid_token", st == 401 and hdr(h, "www-authenticate") == INVALID)
    st, _, body = login(port, {"username": "alice", "password": PASSWORD,
                               "client_id": state["sneaky"]["client_id"]})
    user_token = jbody(body).get("access_token", "")
    res.check("a user's token whose client's scope carries users:read (setup)", st == 200, repr((st, body)))
    st, h, _, _ = admin_call(port, user_token, "GET", users_path())
    res.check("a user's token (it names a session): 401", st == 401 and hdr(h, "www-authenticate") == INVALID,
              repr(st))
    st, h, _, _ = admin_call(port, client_token(port, env.clients["svc"]), "GET", users_path())
    res.check("a client token without users:read: 403 insufficient_scope, scope=\"users:read\"",
              st == 403 and hdr(h, "www-authenticate") == 'Bearer error="insufficient_scope", scope="users:read"',
              repr((st, h)))
    reader = client_token(port, state["reader"])
    res.check("users:read lists", admin_call(port, reader, "GET", users_path())[0] == 200)
    st, h, _, _ = admin_call(port, reader, "POST", users_path(rest="/%s/disable" % env.users["bob"]))
    res.check("users:read only, POST disable: 403 scope=\"users:write\"",
              st == 403 and hdr(h, "www-authenticate") == 'Bearer error="insufficient_scope", scope="users:write"',
              repr((st, h)))
    res.check("... bob is not disabled", env.sql("SELECT disabled FROM users WHERE id = '%s'"
                                                 % env.users["bob"]) == "f")
    beta = state["beta_token"]
    st, h, _, _ = admin_call(port, beta, "GET", users_path())
    res.check("T01: beta's admin token at acme: 401", st == 401 and hdr(h, "www-authenticate") == INVALID, repr(st))
    st, _, _, _ = admin_call(port, beta, "DELETE", users_path(rest="/%s" % env.users["bob"]))
    res.check("T01: beta's admin token cannot delete acme's bob: 401", st == 401, repr(st))
    victim = state["beta_alice"]
    for method, rest in (("GET", ""), ("POST", "/disable"), ("POST", "/unlock"), ("POST", "/enable"), ("DELETE", "")):
        st = admin_call(port, tok, method, users_path(rest="/%s%s" % (victim, rest)))[0]
        res.check("T08: acme's admin, beta's user id, %s %s: 404" % (method, rest or "/users/{id}"), st == 404,
                  repr(st))
    row = env.sql("SELECT disabled, deleted_at IS NULL FROM users WHERE id = '%s'" % victim)
    res.check("T08: ... beta's user unchanged", row == "f|t", row)
    res.check("T08: ... and beta's token still manages it",
              admin_call(port, beta, "GET", users_path(OTHER, "/%s" % victim))[0] == 200)
    for label, rest in (("a malformed id", "/not-a-uuid"), ("an unknown id", "/%s" % uuid.uuid4())):
        res.check("%s: 404" % label, admin_call(port, tok, "GET", users_path(rest=rest))[0] == 404)
        res.check("%s, POST disable: 404" % label,
                  admin_call(port, tok, "POST", users_path(rest=rest + "/disable"))[0] == 404)
    for q in ("limit=0", "limit=101", "limit=-1", "limit=abc", "cursor=xyz", "cursor=%s" % ("1" * 36),
              "q=%01abc"):
        st = admin_call(port, tok, "GET", users_path(rest="?" + q))[0]
        res.check("GET /users?%s: 400" % q, st == 400, repr(st))
    res.check("a bad limit without a token: 401, not 400",
              admin_call(port, None, "GET", users_path(rest="?limit=0"))[0] == 401)
    res.check("an unknown tenant: 404", admin_call(port, tok, "GET", users_path("nope"))[0] == 404)


# ---------------------------------------------------------------------------- list and search

def walk(port, token, query=""):
    ids, pages, cursor = [], 0, None
    while pages < 100:
        q = "?limit=%d%s" % (PAGE, query)
        if cursor:
            q += "&cursor=" + urllib.parse.quote(cursor)
        st, _, body, raw = admin_call(port, token, "GET", users_path(rest=q))
        if st != 200:
            return None, pages, raw
        pages += 1
        users = body.get("users", [])
        if len(users) > PAGE or b"argon2" in raw or b"password" in raw:
            return None, pages, raw
        ids += [u["id"] for u in users]
        cursor = body.get("next_cursor")
        if cursor is None:
            return ids, pages, raw
    return None, pages, b"too many pages"


def check_list(res, env, port, state):
    tok = state["token"]
    want = env.sql("SELECT id FROM users WHERE tenant_id = '%s' AND deleted_at IS NULL ORDER BY id"
                   % state["acme_id"]).split("\n")
    ids, pages, raw = walk(port, tok)
    res.check("pages of %d walk every live user exactly once, in id order" % PAGE, ids == want,
              "%r\n%r\n%r" % (ids, want, raw[:300]))
    res.check("... over several pages, the last with next_cursor null", pages == -(-len(want) // PAGE), repr(pages))
    res.check("T08: beta's users never listed", ids is not None and state["beta_alice"] not in ids)
    st, h, body, raw = admin_call(port, tok, "GET", users_path())
    users = body.get("users", [])
    res.check("default page: 200, all users (fewer than 50), no-store",
              st == 200 and len(users) == len(want) and hdr(h, "cache-control") == "no-store", repr(st))
    res.check("every item: exactly the documented members",
              users and all(sorted(u) == USER_KEYS for u in users), repr(users[:1]))
    res.check("no hash in the answer", b"argon2" not in raw and b"password" not in raw)
    st, _, body, _ = admin_call(port, tok, "GET", users_path(rest="?q=ALI"))
    res.check("q=ALI finds alice (username, case-insensitive)",
              st == 200 and [u["username"] for u in body.get("users", [])] == ["alice"], repr(body))
    st, _, body, _ = admin_call(port, tok, "GET", users_path(rest="?q=" + urllib.parse.quote("mail@EXAMPLE.test")))
    res.check("q finds by a part of the address, case-insensitively",
              st == 200 and [u["username"] for u in body.get("users", [])] == ["zed"], repr(body))
    ids, _, _ = walk(port, tok, "&q=filler")
    res.check("a search pages too", ids is not None and len(ids) == 7, repr(ids))
    st, _, body, _ = admin_call(port, tok, "GET", users_path(rest="?q=nobody-has-this"))
    res.check("a search matching none: an empty page, next_cursor null",
              st == 200 and body == {"users": [], "next_cursor": None}, repr(body))


# ---------------------------------------------------------------------------- changes

def check_disable(res, env, port, state):
    tok, uid = state["token"], env.users["alice"]
    st, _, session = good_login(env, port, "alice")
    res.check("alice logs in (setup)", st == 200, repr(session))
    wrong = login_answer(env, port, "alice", "not the password")
    st, _, body, _ = admin_call(port, tok, "GET", users_path(rest="/" + uid))
    res.check("GET /users/{id}: alice, enabled", st == 200 and body.get("id") == uid and
              body.get("username") == "alice" and body.get("disabled") is False and sorted(body) == USER_KEYS,
              repr(body))
    st = admin_call(port, tok, "POST", users_path(rest="/%s/disable" % uid), request_id="req-disable-1")[0]
    res.check("O20: POST disable: 204", st == 204, repr(st))
    res.check("O20: ... her access token is refused at /verify at once",
              verify(port, session["access_token"])[0] == 401)
    st, body = refresh(port, env, session["refresh_token"])
    res.check("O20: ... her refresh token is invalid_grant", st == 400 and body.get("error") == "invalid_grant",
              repr((st, body)))
    res.check("O20/P01: ... the right password gets exactly a wrong password's answer",
              login_answer(env, port, "alice", PASSWORD) == wrong)
    res.check("... GET shows disabled", admin_call(port, tok, "GET", users_path(rest="/" + uid))[2].get("disabled")
              is True)
    row = audit_rows(env, "user_disabled", uid)
    res.check("... audit user_disabled: actor the admin client, address, request id",
              row == "client|%s|127.0.0.1|req-disable-1" % env.clients["admin"]["client_id"], row)
    st = admin_call(port, tok, "POST", users_path(rest="/%s/enable" % uid))[0]
    res.check("POST enable: 204", st == 204, repr(st))
    res.check("... alice logs in again", good_login(env, port, "alice")[0] == 200)
    res.check("... audit user_enabled", audit_rows(env, "user_enabled", uid).startswith("client|"))


def check_unlock(res, env, port, state):
    tok, uid = state["token"], env.users["locky"]
    for i in range(LOCK_THRESHOLD):
        login(port, {"username": "locky", "password": "guess %d" % i, "client_id": env.clients["app"]["client_id"]})
    locked = env.counted(port, "SELECT failed_logins, locked_until > now() FROM users WHERE id = '%s'" % uid)
    res.check("P04: %d wrong passwords lock locky (setup)" % LOCK_THRESHOLD, locked == "%d|t" % LOCK_THRESHOLD, locked)
    # The lock's first wait is short (2 s): make it long, so what lets locky in is the unlock.
    env.sql("UPDATE users SET locked_until = now() + interval '1 hour' WHERE id = '%s'" % uid)
    res.check("P04: ... the right password is refused while locked", good_login(env, port, "locky")[0] == 401)
    res.check("P04: ... its failure's statement answered", login_failures_settled(port))
    body = admin_call(port, tok, "GET", users_path(rest="/" + uid))[2]
    res.check("P04: ... GET shows the lock", body.get("failed_logins") == LOCK_THRESHOLD and
              body.get("locked_until") is not None, repr(body))
    st = admin_call(port, tok, "POST", users_path(rest="/%s/unlock" % uid))[0]
    res.check("P04: POST unlock: 204", st == 204, repr(st))
    res.check("P04: ... the right password logs in at once", good_login(env, port, "locky")[0] == 200)
    row = env.sql("SELECT failed_logins, locked_until IS NULL FROM users WHERE id = '%s'" % uid)
    res.check("P04: ... failed_logins 0, no lock", row == "0|t", row)
    row = env.sql("SELECT details->>'failed_logins' FROM audit_log WHERE action = 'user_unlocked' "
                  "AND target_id = '%s'" % uid)
    res.check("P04: ... audit user_unlocked keeps the count it cleared", row == str(LOCK_THRESHOLD), row)


def check_delete(res, env, port, state):
    tok, uid = state["token"], env.users["gone"]
    st, _, session = good_login(env, port, "gone")
    res.check("gone logs in (setup)", st == 200, repr(session))
    wrong = login_answer(env, port, "gone", "not the password")
    st = admin_call(port, tok, "DELETE", users_path(rest="/" + uid))[0]
    res.check("DELETE /users/{id}: 204", st == 204, repr(st))
    res.check("... GET: 404", admin_call(port, tok, "GET", users_path(rest="/" + uid))[0] == 404)
    res.check("... a second DELETE: 404", admin_call(port, tok, "DELETE", users_path(rest="/" + uid))[0] == 404)
    res.check("... enable of the deleted user: 404",
              admin_call(port, tok, "POST", users_path(rest="/%s/enable" % uid))[0] == 404)
    ids, _, _ = walk(port, tok)
    res.check("... not listed", ids is not None and uid not in ids)
    res.check("... the row is kept, soft-deleted",
              env.sql("SELECT deleted_at IS NOT NULL FROM users WHERE id = '%s'" % uid) == "t")
    res.check("... the access token is refused", verify(port, session["access_token"])[0] == 401)
    st, body = refresh(port, env, session["refresh_token"])
    res.check("... the refresh token is invalid_grant", st == 400 and body.get("error") == "invalid_grant",
              repr((st, body)))
    res.check("... login refused with a wrong password's answer", login_answer(env, port, "gone", PASSWORD) == wrong)
    res.check("... audit user_deleted by the admin client",
              audit_rows(env, "user_deleted", uid).startswith("client|%s|" % env.clients["admin"]["client_id"]))
    env.sql("UPDATE tenants SET settings = '{\"registration\": \"open\"}' WHERE slug = '%s'" % TENANT)
    st, _, data = call(port, "POST", "/t/%s/api/v1/register" % TENANT,
                       json.dumps({"username": "gone", "password": "another long passphrase"}).encode(),
                       {"Content-Type": "application/json"})
    new_id = jbody(data).get("id")
    res.check("... the username registers again, as a new user", st == 201 and new_id and new_id != uid,
              repr((st, data)))


# ---------------------------------------------------------------------------- DELETE /me

def me_delete(port, token, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return admin_call(port, token, "DELETE", "/t/%s/api/v1/me" % TENANT, body=data, content_type=content_type)[0]


def check_me_delete(res, env, port, state):
    uid = env.users["selfie"]
    s1 = good_login(env, port, "selfie", agent="one/1")[2]
    s2 = good_login(env, port, "selfie", agent="two/1")[2]
    token = s1.get("access_token", "")
    wrong = login_answer(env, port, "selfie", "not the password")
    res.check("DELETE /me without a token: 401", me_delete(port, None, {"password": PASSWORD}) == 401)
    res.check("DELETE /me with a client's own token: 401",
              me_delete(port, state["token"], {"password": PASSWORD}) == 401)
    res.check("DELETE /me without a password: 400", me_delete(port, token, {}) == 400)
    res.check("DELETE /me with an empty password: 400", me_delete(port, token, {"password": ""}) == 400)
    res.check("DELETE /me not JSON: 415", me_delete(port, token, b"password=x", "text/plain") == 415)
    res.check("DELETE /me with a wrong password: 403", me_delete(port, token, {"password": "not it at all"}) == 403)
    res.check("... nothing deleted", env.sql("SELECT deleted_at IS NULL FROM users WHERE id = '%s'" % uid) == "t")
    res.check("... the token still verifies", verify(port, token)[0] == 200)
    res.check("DELETE /me with the password: 204", me_delete(port, token, {"password": PASSWORD}) == 204)
    res.check("... soft-deleted", env.sql("SELECT deleted_at IS NOT NULL FROM users WHERE id = '%s'" % uid) == "t")
    res.check("... both sessions' access tokens are refused",
              verify(port, token)[0] == 401 and verify(port, s2["access_token"])[0] == 401)
    res.check("... refresh tokens are invalid_grant",
              refresh(port, env, s1["refresh_token"])[1].get("error") == "invalid_grant" and
              refresh(port, env, s2["refresh_token"])[1].get("error") == "invalid_grant")
    res.check("... login refused as a wrong password", login_answer(env, port, "selfie", PASSWORD) == wrong)
    row = env.sql("SELECT actor_kind, actor_id, details->>'sessions' FROM audit_log WHERE action = 'user_deleted' "
                  "AND target_id = '%s'" % uid)
    res.check("... audit user_deleted by the user, two sessions", row == "user|%s|2" % uid, row)
    res.check("... the admin sees no such user",
              admin_call(port, state["token"], "GET", users_path(rest="/" + uid))[0] == 404)


def run_all(res, env):
    state = {}
    prepare(env, state)
    srv = env.server(TESSERA_RATE_ACCOUNT_PER_MIN=0)  # logins to one account many times a second
    try:
        state["token"] = client_token(srv.port, env.clients["admin"])
        state["beta_token"] = client_token(srv.port, state["beta_admin"], OTHER)
        check_refusals(res, env, srv.port, state)
        check_list(res, env, srv.port, state)
        check_disable(res, env, srv.port, state)
        check_unlock(res, env, srv.port, state)
        check_delete(res, env, srv.port, state)
        check_me_delete(res, env, srv.port, state)
        check_clean_exit(res, srv)
    finally:
        srv.kill()
    check_rate_limited(res, env, state)


ADMIN_RATE_TRIES = 6  # at one per second with a one-second burst, the third at once is refused


def check_rate_limited(res, env, state):
    """Admin requests take the source address's bucket: past it, 429 with Retry-After, before the
    token is even looked at."""
    srv = env.server(TESSERA_RATE_ADDRESS_PER_S=1, TESSERA_RATE_BURST_S=1)
    try:
        answers = [admin_call(srv.port, state["token"], "GET", users_path())[:2] for _ in range(ADMIN_RATE_TRIES)]
        statuses = [a[0] for a in answers]
        limited = [a for a in answers if a[0] == 429]
        res.check("admin requests past the address's burst: 429 with Retry-After",
                  statuses[0] == 200 and limited and all(hdr(a[1], "retry-after") for a in limited), repr(statuses))
        check_clean_exit(res, srv, "rate-limited server exits 0 on SIGTERM, no sanitizer report")
    finally:
        srv.kill()


def main():
    run_with_env("the tenant admin's users API and self-service deletion", 'admin users', run_all)


if __name__ == "__main__":
    main()
