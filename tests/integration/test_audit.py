#!/usr/bin/env python3
"""The tenant admin's audit log, GET /t/{tenant}/api/v1/audit (auth/audit.c), issue 6.

Two tenants, acme and beta, each with an admin client (client_credentials, scope audit:read and
users:write). Admin actions through the users API (auth/admin.c) and logins write audit rows;
then, with acme's admin token:
- the answer is {"events": [...], "next_cursor"}, newest first (seq strictly decreasing), each
  event exactly seq, time, actor_kind, actor_id, action, target_kind, target_id, ip,
  request_id, details; the user_disabled row names the admin client, the user, the address,
  the X-Request-Id sent with the change and details.sessions;
- filters: action, actor_id, target_id each return exactly the matching rows (compared with
  the table); since in the future and until in the past: none; since 0: all; since and until
  around the rows' time: all of them;
- the cursor: pages of 3 walk every acme row exactly once, newest first, the last page's
  next_cursor null; with a filter too;
- T08: beta's rows never appear (by a walk, and filtered by beta's user id); T01: beta's admin
  token at acme's /audit is 401; a client token without audit:read: 403 with
  Bearer error="insufficient_scope", scope="audit:read"; a user's token: 401; no token: 401;
- a bad limit (0, 101, x), since (abc, -5, 1.5), cursor (0, abc, 19 digits): 400.
Skips when Postgres is not installed.
"""
import time
import urllib.parse

from tessera_harness import check_clean_exit
from test_audit_batch import settle
from test_admin_users import admin_call, client_token, hdr
from test_login import PASSWORD, TENANT, good_login, run_with_env

OTHER = "beta"
SCOPE = "audit:read users:write"
EVENT_KEYS = sorted(["seq", "time", "actor_kind", "actor_id", "action", "target_kind", "target_id", "ip",
                     "request_id", "details"])
PAGE = 3


def audit(port, token, tenant=TENANT, **query):
    q = urllib.parse.urlencode(query)
    return admin_call(port, token, "GET", "/t/%s/api/v1/audit%s" % (tenant, ("?" + q) if q else ""))


def walk(port, token, tenant=TENANT, **query):
    """Every event by pages of PAGE: (seqs, pages) or (None, the failing answer)."""
    seqs, cursor, pages = [], None, 0
    while pages < 200:
        params = dict(query, limit=PAGE)
        if cursor:
            params["cursor"] = cursor
        st, _, body, raw = audit(port, token, tenant, **params)
        events = body.get("events")
        if st != 200 or events is None or len(events) > PAGE:
            return None, raw
        pages += 1
        seqs += [e["seq"] for e in events]
        cursor = body.get("next_cursor")
        if cursor is None:
            return seqs, pages
    return None, "too many pages"


def table_seqs(env, tenant_id, where=""):
    out = env.sql("SELECT seq FROM audit_log WHERE tenant_id = '%s' %s ORDER BY seq DESC" % (tenant_id, where))
    return [int(x) for x in out.split("\n") if x]


def prepare(env, state):
    env.clients["admin"] = env.admin("admin", "client", "create", "--tenant", TENANT, "--name", "admin",
                                     "--scope", SCOPE, "--grant", "client_credentials")
    for name in ("alice", "bob"):
        env.user(name)
    env.admin("admin", "tenant", "create", OTHER)
    env.admin("admin", "keys", "rotate", "--tenant", OTHER)
    state["beta_admin"] = env.admin("admin", "client", "create", "--tenant", OTHER, "--name", "admin",
                                    "--scope", SCOPE, "--grant", "client_credentials")
    args = ["admin", "user", "create", "--tenant", OTHER, "--username", "alice", "--password-stdin"]
    state["beta_alice"] = env.admin(*args, stdin=(PASSWORD + "\n").encode())["id"]
    state["acme_id"] = env.sql("SELECT id FROM tenants WHERE slug = '%s'" % TENANT)


def act(res, env, port, state):
    """The rows the checks read: logins, then admin actions in both tenants."""
    tok, beta = state["token"], state["beta_token"]
    alice, bob = env.users["alice"], env.users["bob"]
    st, _, session = good_login(env, port, "alice")
    res.check("alice logs in (setup)", st == 200, repr(session))
    good_login(env, port, "bob")
    users = "/t/%s/api/v1/users/" % TENANT
    steps = (("POST", users + alice + "/disable", "req-audit-disable"), ("POST", users + alice + "/enable", None),
             ("POST", users + bob + "/unlock", None), ("POST", users + bob + "/disable", None),
             ("POST", users + alice + "/unlock", None))
    for method, path, rid in steps:
        st = admin_call(port, tok, method, path, request_id=rid)[0]
        res.check("setup: %s %s: 204" % (method, path.rsplit("/", 1)[-1]), st == 204, repr(st))
    st = admin_call(port, beta, "POST", "/t/%s/api/v1/users/%s/disable" % (OTHER, state["beta_alice"]))[0]
    res.check("setup: beta's admin disables beta's alice: 204", st == 204, repr(st))


def check_answer(res, env, port, state):
    tok, alice = state["token"], env.users["alice"]
    st, h, body, raw = audit(port, tok)
    events = body.get("events", [])
    seqs = [e.get("seq") for e in events]
    res.check("GET /audit: 200, no-store", st == 200 and hdr(h, "cache-control") == "no-store", repr((st, raw[:200])))
    res.check("... every acme row (fewer than 50), newest first", seqs == table_seqs(env, state["acme_id"]),
              repr(seqs))
    res.check("... every event: exactly the documented members", events and all(sorted(e) == EVENT_KEYS
                                                                               for e in events), repr(events[:1]))
    disabled = [e for e in events if e["action"] == "user_disabled" and e["target_id"] == alice]
    want = {"actor_kind": "client", "actor_id": env.clients["admin"]["client_id"], "target_kind": "user",
            "ip": "127.0.0.1", "request_id": "req-audit-disable", "details": {"sessions": 1}}
    res.check("... alice's user_disabled: the admin client, the address, the request id, one session",
              len(disabled) == 1 and all(disabled[0].get(k) == v for k, v in want.items()) and disabled[0]["time"],
              repr(disabled))
    res.check("... next_cursor null on a whole log", "next_cursor" in body and body["next_cursor"] is None)


def check_filters(res, env, port, state):
    tok, alice, admin_id = state["token"], env.users["alice"], env.clients["admin"]["client_id"]
    tid = state["acme_id"]
    cases = (("action=user_disabled", {"action": "user_disabled"}, "AND action = 'user_disabled'"),
             ("action=login_succeeded", {"action": "login_succeeded"}, "AND action = 'login_succeeded'"),
             ("actor_id=the admin client", {"actor_id": admin_id}, "AND actor_id = '%s'" % admin_id),
             ("target_id=alice", {"target_id": alice}, "AND target_id = '%s'" % alice),
             ("action and target_id", {"action": "user_unlocked", "target_id": alice},
              "AND action = 'user_unlocked' AND target_id = '%s'" % alice))
    for label, query, where in cases:
        st, _, body, _ = audit(port, tok, **query)
        got = [e["seq"] for e in body.get("events", [])]
        want = table_seqs(env, tid, where)
        res.check("filter %s: exactly its rows" % label, st == 200 and got == want and want, repr((got, want)))
    now = int(time.time())
    for label, query, expect_all in (("since an hour ahead", {"since": now + 3600}, False),
                                     ("until 1970", {"until": 1}, False),
                                     ("since 0", {"since": 0}, True),
                                     ("since and until around now", {"since": now - 3600, "until": now + 3600}, True)):
        st, _, body, _ = audit(port, tok, **query)
        got = [e["seq"] for e in body.get("events", [])]
        want = table_seqs(env, tid) if expect_all else []
        res.check("%s: %s" % (label, "every row" if expect_all else "none"), st == 200 and got == want, repr(got))


def check_cursor(res, env, port, state):
    tok = state["token"]
    want = table_seqs(env, state["acme_id"])
    seqs, pages = walk(port, tok)
    res.check("pages of %d walk every acme row exactly once, newest first" % PAGE, seqs == want,
              "%r\n%r" % (seqs, want))
    res.check("... over several pages", seqs is not None and pages == -(-len(want) // PAGE) and pages > 2,
              repr(pages))
    admin_id = state["admin_id"]
    seqs, _ = walk(port, tok, actor_id=admin_id)
    want = table_seqs(env, state["acme_id"], "AND actor_id = '%s'" % admin_id)
    res.check("a filtered walk: the filter's rows exactly once", seqs == want and len(want) > PAGE,
              "%r %r" % (seqs, want))


def check_isolation(res, env, port, state):
    tok, beta = state["token"], state["beta_token"]
    seqs, _ = walk(port, tok)
    beta_seqs = table_seqs(env, env.sql("SELECT id FROM tenants WHERE slug = '%s'" % OTHER))
    res.check("T08: beta's rows exist (setup)", len(beta_seqs) >= 1, repr(beta_seqs))
    res.check("T08: none of beta's rows in acme's log", seqs is not None and not set(seqs) & set(beta_seqs))
    st, _, body, _ = audit(port, tok, target_id=state["beta_alice"])
    res.check("T08: acme's token, filtered by beta's user id: nothing",
              st == 200 and body.get("events") == [], repr(body))
    st, _, body, _ = audit(port, beta, OTHER, target_id=state["beta_alice"])
    res.check("T08: ... which beta's own token sees", st == 200 and len(body.get("events", [])) == 1, repr(body))
    st, h, _, _ = audit(port, beta)
    res.check("T01: beta's admin token at acme's /audit: 401",
              st == 401 and hdr(h, "www-authenticate") == 'Bearer error="invalid_token"', repr(st))
    st, h, _, _ = audit(port, client_token(port, env.clients["svc"]))
    res.check("a client token without audit:read: 403 insufficient_scope, scope=\"audit:read\"",
              st == 403 and hdr(h, "www-authenticate") == 'Bearer error="insufficient_scope", scope="audit:read"',
              repr((st, h)))
    user_token = good_login(env, port, "bob")[2].get("access_token", "")
    res.check("a user's token: 401", audit(port, user_token)[0] == 401)
    res.check("no token: 401", audit(port, None)[0] == 401)


def check_bad_queries(res, env, port, state):
    tok = state["token"]
    for query in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"since": "abc"}, {"since": -5},
                  {"until": "1.5"}, {"since": "2026-01-01T00:00:00Z"}, {"cursor": 0}, {"cursor": "abc"},
                  {"cursor": "9" * 19}, {"action": "a" * 65}):
        st = audit(port, tok, **query)[0]
        res.check("GET /audit?%s: 400" % urllib.parse.urlencode(query)[:40], st == 400, repr(st))
    res.check("a bad query without a token: 401", audit(port, None, limit=0)[0] == 401)


def run_all(res, env):
    state = {}
    prepare(env, state)
    srv = env.server(TESSERA_RATE_ACCOUNT_PER_MIN=0)  # logins to one account many times a second
    try:
        state["token"] = client_token(srv.port, env.clients["admin"])
        state["beta_token"] = client_token(srv.port, state["beta_admin"], OTHER)
        state["admin_id"] = env.clients["admin"]["client_id"]
        act(res, env, srv.port, state)
        # the tokens' batched events (auth/audit_batch.c) are in before the rows are compared
        res.check("setup: the batched audit events are written", settle(srv.port))
        check_answer(res, env, srv.port, state)
        check_filters(res, env, srv.port, state)
        check_cursor(res, env, srv.port, state)
        check_isolation(res, env, srv.port, state)
        check_bad_queries(res, env, srv.port, state)
        check_clean_exit(res, srv)
    finally:
        srv.kill()


def main():
    run_with_env("the tenant admin's audit log", 'audit', run_all)


if __name__ == "__main__":
    main()
