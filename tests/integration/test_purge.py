#!/usr/bin/env python3
"""What expired is deleted (store/purge.h): `tessera admin expired purge`, and the server's
hourly upkeep on the key rotator's thread.

Rows are written straight into a private cluster (test_login.run_with_env): for each growing
table one that stopped mattering more than a day ago (STORE_PURGE_GRACE_S) and ones that did
not (live, or expired an hour ago); for api_keys, a key revoked and one expired two days ago
(gone), the same an hour ago (kept), a live one expiring in an hour and one never expiring
(kept). The CLI deletes exactly the first kind and reports the counts per table; a second run
deletes nothing. Audit rows are kept however old by default; with TESSERA_AUDIT_RETENTION_DAYS
the CLI deletes those older than that, in every tenant, and keeps the younger ones. Then a
server started with a 1 s rotation check (TESSERA_KEY_ROTATION_CHECK_S) deletes a newly expired
row by itself, and a live session still refreshes afterwards; a server whose key rotation is off
(TESSERA_KEY_ROTATE_AFTER_S=0) still runs the upkeep and deletes expired and old audit rows.
"""
import base64
import hashlib
import os
import time

from tessera_harness import check_clean_exit
from test_login import TENANT, basic, call, good_login, run_with_env

UPKEEP_S = 20.0  # the server's pass runs every second; room for a loaded sanitizer build
OLD = "now() - interval '2 days'"     # past the one-day grace
RECENT = "now() - interval '1 hour'"  # expired, but within the grace
LIVE = "now() + interval '1 hour'"
MADE = "now() - interval '3 days'"    # an API key's created_at: before its revocation or expiry
OTHER_TENANT = "purgeother"           # a second tenant's audit rows go as well
RETENTION_DAYS = 365                  # TESSERA_AUDIT_RETENTION_DAYS of the CLI's second pass
AUDIT_AGES = (("audit-old", "now() - interval '400 days'"), ("audit-young", "now() - interval '300 days'"),
              ("audit-new", "now()"))


def seed_audit(env, tenant_ids, tag_prefix=""):
    """An audit row of each age in each tenant, told apart by action."""
    for tid in tenant_ids:
        for action, at in AUDIT_AGES:
            env.sql("INSERT INTO audit_log (tenant_id, actor_kind, action, created_at) VALUES "
                    "('%s', 'system', '%s%s', %s)" % (tid, tag_prefix, action, at))


def admin_with(env, extra, *args):
    """env.admin with extra variables in the CLI's environment."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        return env.admin(*args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def display_prefix(name):
    """A seeded key's display prefix, of a real key's form (crypto/secret.h: the first 8 base64url
    characters after sk_), distinct per key."""
    digest = hashlib.sha256(("apikey-" + name).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:8]


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
                % (tid, uid, client, name, display_prefix(name), name, expires, revoked, MADE))
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
                "api_keys": 2, "audit_log": 0}
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


def audit_left(env, action):
    return int(env.sql("SELECT count(*) FROM audit_log WHERE action = '%s'" % action))


def test_audit_retention(res, env):
    env.admin("admin", "tenant", "create", OTHER_TENANT)
    tenant_ids = env.sql("SELECT id FROM tenants ORDER BY id").split()
    res.check("audit: two tenants", len(tenant_ids) == 2, repr(tenant_ids))
    seed_audit(env, tenant_ids)
    kept = (env.admin("admin", "expired", "purge") or {}).get("purged", {})
    res.check("audit: without a retention, no audit row is deleted however old",
              kept.get("audit_log") == 0 and audit_left(env, "audit-old") == len(tenant_ids), repr(kept))
    out = admin_with(env, {"TESSERA_AUDIT_RETENTION_DAYS": str(RETENTION_DAYS)}, "admin", "expired", "purge")
    purged = (out or {}).get("purged", {})
    res.check("audit: with %d days, the older rows of every tenant (%d) are deleted"
              % (RETENTION_DAYS, len(tenant_ids)), purged.get("audit_log") == len(tenant_ids), repr(purged))
    res.check("audit: none older than the retention is left", audit_left(env, "audit-old") == 0)
    res.check("audit: the younger rows of every tenant are kept",
              audit_left(env, "audit-young") == len(tenant_ids) and audit_left(env, "audit-new") == len(tenant_ids))
    res.check("audit: a retention out of range is refused by the CLI",
              raises(lambda: admin_with(env, {"TESSERA_AUDIT_RETENTION_DAYS": "36501"}, "admin", "expired", "purge")))


def raises(fn):
    try:
        fn()
    except RuntimeError:
        return True
    return False


def wait_for_zero(env, statement):
    """Polls statement (a count) until it says 0 or UPKEEP_S pass; the last count."""
    deadline = time.monotonic() + UPKEEP_S
    left = env.sql(statement)
    while time.monotonic() < deadline and left != "0":
        time.sleep(0.2)
        left = env.sql(statement)
    return left


def test_server(res, env, uid):
    srv = env.server(TESSERA_KEY_ROTATION_CHECK_S=1)
    try:
        status, _, tokens = good_login(env, srv.port, "alice")
        res.check("server: a login before the upkeep → 200", status == 200, repr(status))
        tid = env.sql("SELECT id FROM tenants WHERE slug = '%s'" % TENANT)
        env.sql("INSERT INTO revocations (tenant_id, kind, value, expires_at) VALUES ('%s', 'jti', 'server-old', %s)"
                % (tid, OLD))
        left = wait_for_zero(env, "SELECT count(*) FROM revocations WHERE value = 'server-old'")
        res.check("server: its upkeep deletes a row a day past expiry (within %.0f s)" % UPKEEP_S, left == "0", left)
        form = "grant_type=refresh_token&refresh_token=%s" % tokens.get("refresh_token", "")
        st, _, data = call(srv.port, "POST", "/t/%s/oauth2/token" % TENANT, form,
                           {"Content-Type": "application/x-www-form-urlencoded",
                            "Authorization": basic(env.clients["app"])})
        res.check("server: the live session still refreshes after the upkeep", st == 200, "%s %r" % (st, data[:200]))
    finally:
        check_clean_exit(res, srv)


def test_server_without_rotation(res, env):
    """The upkeep does not depend on key rotation: with it off, expired rows and audit rows past
    the retention still go."""
    srv = env.server(TESSERA_KEY_ROTATION_CHECK_S=1, TESSERA_KEY_ROTATE_AFTER_S=0,
                     TESSERA_AUDIT_RETENTION_DAYS=RETENTION_DAYS)
    try:
        tid = env.sql("SELECT id FROM tenants WHERE slug = '%s'" % TENANT)
        env.sql("INSERT INTO revocations (tenant_id, kind, value, expires_at) VALUES ('%s', 'jti', 'norot-old', %s)"
                % (tid, OLD))
        seed_audit(env, [tid], "norot-")
        left = wait_for_zero(env, "SELECT count(*) FROM revocations WHERE value = 'norot-old'")
        res.check("rotation off: the upkeep still deletes a row a day past expiry", left == "0", left)
        left = wait_for_zero(env, "SELECT count(*) FROM audit_log WHERE action = 'norot-audit-old'")
        res.check("rotation off: the upkeep deletes audit rows past TESSERA_AUDIT_RETENTION_DAYS", left == "0", left)
        res.check("rotation off: it keeps the younger audit rows",
                  audit_left(env, "norot-audit-young") == 1 and audit_left(env, "norot-audit-new") == 1)
    finally:
        check_clean_exit(res, srv)


def main_checks(res, env):
    uid = env.user("alice")
    test_cli(res, env, uid)
    test_audit_retention(res, env)
    test_server(res, env, uid)
    test_server_without_rotation(res, env)


if __name__ == "__main__":
    run_with_env("expired rows purged (store/purge.h)", "purge", main_checks)
