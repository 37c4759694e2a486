#!/usr/bin/env python3
"""What expired is deleted (store/purge.h): `tessera admin expired purge`, and the server's
hourly upkeep on the key rotator's thread.

Rows are written straight into a private cluster (test_login.run_with_env): for each growing
table one that stopped mattering more than a day ago (STORE_PURGE_GRACE_S) and ones that did
not (live, or expired an hour ago); for api_keys, a key revoked and one expired two days ago
(gone), the same an hour ago (kept), a live one expiring in an hour and one never expiring
(kept). The CLI deletes exactly the first kind and reports the counts per table; a second run
deletes nothing. Then a server started with a 1 s rotation check (TESSERA_KEY_ROTATION_CHECK_S)
deletes a newly expired row by itself, and a live session still refreshes afterwards.
"""
import time

from tessera_harness import check_clean_exit
from test_login import TENANT, basic, call, good_login, run_with_env

UPKEEP_S = 20.0  # the server's pass runs every second; room for a loaded sanitizer build
OLD = "now() - interval '2 days'"     # past the one-day grace
RECENT = "now() - interval '1 hour'"  # expired, but within the grace
LIVE = "now() + interval '1 hour'"
MADE = "now() - interval '3 days'"    # an API key's created_at: before its revocation or expiry


def seed(env, uid):
    """The rows of every table, as (table, condition naming the ones to go) pairs."""
    tid = env.sql("SELECT id FROM tenants WHERE slug = '%s'" % TENANT)
    client = env.clients["app"]["client_id"]
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    for tag, at in (("old", OLD), ("recent", RECENT), ("live", LIVE)):
        env.sql("INSERT INTO authorizations (id, tenant_id, client_id, redirect_uri, redirect_given, scope, "
                "state, code_challenge, expires_at) VALUES (gen_random_uuid(), '%s', '%s', "
                "'https://app.example/cb', true, 'openid', '%s', '%s', %s)" % (tid, client, tag, challenge, at))
        env.sql("INSERT INTO sessions (tenant_id, user_id, client_id, user_agent, expires_at, absolute_expires_at) "
                "VALUES ('%s', '%s', '%s', '%s-sliding', %s, now() + interval '30 days')" % (tid, uid, client, tag, at))
        env.sql("INSERT INTO sessions (tenant_id, user_id, client_id, user_agent, expires_at, absolute_expires_at, "
                "revoked_at) VALUES ('%s', '%s', '%s', '%s-revoked', %s, %s, %s)"
                % (tid, uid, client, tag, LIVE, LIVE, at if tag != "live" else "NULL"))
        env.sql("INSERT INTO revocations (tenant_id, kind, value, expires_at) VALUES ('%s', 'jti', '%s', %s)"
                % (tid, tag, at))
        env.sql("INSERT INTO one_time_tokens (tenant_id, user_id, purpose, sha256, data, expires_at) VALUES "
                "('%s', '%s', 'password_reset', sha256(convert_to('%s', 'UTF8')), '{\"tag\": \"%s\"}', %s)"
                % (tid, uid, tag, tag, at))
        env.sql("INSERT INTO email_outbox (tenant_id, to_address, subject, body_text, state, sent_at) VALUES "
                "('%s', 'a@example.test', '%s', 'x', 'sent', %s)" % (tid, tag, at))
    env.sql("INSERT INTO email_outbox (tenant_id, to_address, subject, body_text, next_attempt_at) VALUES "
            "('%s', 'a@example.test', 'pending-old', 'x', %s)" % (tid, OLD))
    # API keys (name, expires_at, revoked_at): gone a day after the revocation or the expiry.
    for name, expires, revoked in (("old-revoked", "NULL", OLD), ("old-expired", OLD, "NULL"),
                                   ("recent-revoked", "NULL", RECENT), ("recent-expired", RECENT, "NULL"),
                                   ("live-expiring", LIVE, "NULL"), ("live-forever", "NULL", "NULL")):
        env.sql("INSERT INTO api_keys (tenant_id, user_id, client_id, name, prefix, sha256, scopes, expires_at, "
                "revoked_at, created_at) VALUES ('%s', '%s', '%s', '%s', '%s', sha256(convert_to('apikey-%s', "
                "'UTF8')), '{read}', %s, %s, %s)"
                % (tid, uid, client, name, (name.replace("-", "") + "xxxxxxxx")[:8], name, expires, revoked, MADE))
    return (("authorizations", "state = 'old'"),
            ("sessions", "user_agent LIKE 'old-%'"),
            ("revocations", "value = 'old'"),
            ("one_time_tokens", "data->>'tag' = 'old'"),
            ("email_outbox", "subject = 'old'"),
            ("api_keys", "name LIKE 'old-%'"))


def counts(env, table):
    return int(env.sql("SELECT count(*) FROM %s" % table))


def test_cli(res, env, uid):
    tables = seed(env, uid)
    before = {t: counts(env, t) for t, _ in tables}
    out = env.admin("admin", "expired", "purge")
    purged = (out or {}).get("purged", {})
    expected = {"authorizations": 1, "sessions": 2, "revocations": 1, "one_time_tokens": 1, "email_outbox": 1,
                "api_keys": 2}
    res.check("CLI: the rows a day past expiry are deleted, counted per table", purged == expected,
              "%r, expected %r" % (purged, expected))
    for table, gone in tables:
        left = int(env.sql("SELECT count(*) FROM %s WHERE %s" % (table, gone)))
        res.check("CLI: %s: none of the old rows is left" % table, left == 0, repr(left))
        res.check("CLI: %s: the recent and live rows are kept" % table,
                  counts(env, table) == before[table] - expected[table], "%d → %d" % (before[table], counts(env, table)))
    res.check("CLI: a pending mail is kept however old",
              env.sql("SELECT count(*) FROM email_outbox WHERE subject = 'pending-old'") == "1")
    again = (env.admin("admin", "expired", "purge") or {}).get("purged", {})
    res.check("CLI: a second run deletes nothing", again and all(v == 0 for v in again.values()), repr(again))


def test_server(res, env, uid):
    srv = env.server(TESSERA_KEY_ROTATION_CHECK_S=1)
    try:
        status, _, tokens = good_login(env, srv.port, "alice")
        res.check("server: a login before the upkeep → 200", status == 200, repr(status))
        tid = env.sql("SELECT id FROM tenants WHERE slug = '%s'" % TENANT)
        env.sql("INSERT INTO revocations (tenant_id, kind, value, expires_at) VALUES ('%s', 'jti', 'server-old', %s)"
                % (tid, OLD))
        deadline = time.monotonic() + UPKEEP_S
        left = "1"
        while time.monotonic() < deadline and left != "0":
            time.sleep(0.2)
            left = env.sql("SELECT count(*) FROM revocations WHERE value = 'server-old'")
        res.check("server: its upkeep deletes a row a day past expiry (within %.0f s)" % UPKEEP_S, left == "0", left)
        form = "grant_type=refresh_token&refresh_token=%s" % tokens.get("refresh_token", "")
        st, _, data = call(srv.port, "POST", "/t/%s/oauth2/token" % TENANT, form,
                           {"Content-Type": "application/x-www-form-urlencoded",
                            "Authorization": basic(env.clients["app"])})
        res.check("server: the live session still refreshes after the upkeep", st == 200, "%s %r" % (st, data[:200]))
    finally:
        check_clean_exit(res, srv)


def main_checks(res, env):
    uid = env.user("alice")
    test_cli(res, env, uid)
    test_server(res, env, uid)


if __name__ == "__main__":
    run_with_env("expired rows purged (store/purge.h)", "purge", main_checks)
