#!/usr/bin/env python3
"""Password reset and email verification by one-time tokens (issue 6; auth/recovery.c;
SECURITY P02, P08, P13), with mail delivered through the email_outbox to a real SMTP sink
(Debian's aiosmtpd writing a maildir, read back with Python's mailbox and email modules).

- forgot for a known address (any case): 202 {"status":"accepted"}; the mail reaches the user's
  address with a link <TESSERA_PUBLIC_URL>/t/acme/reset-password#token=<43 base64url>; the
  database holds only the token's SHA-256 (the token's text appears in no one_time_tokens row
  and not in the server's log), the sent outbox row's body is cleared, an audit row
  password_reset_requested is written;
- P02: an unknown address, and an address two users share, answer exactly as the known one
  (status, headers, body) and no mail or outbox row is made for them;
- P08/P09: a too short, a common, a NUL-holding, a 4 KiB new password: 400, and the token is
  not spent (used_at still NULL); a malformed token 400; no JSON content type 415;
- a reset: 204; the old password is refused at login, the new one accepted; every session
  made before (two logins) has its access token refused at /verify and its refresh token
  invalid_grant; the lockout is cleared; an audit row password_reset counts two sessions;
- P13: the same token again: 400, and the password hash is unchanged; an earlier token is
  invalidated by a newer request; an expired token (expires_at moved into the past) is 400;
  a verification token is refused by the reset endpoint;
- verification: verify/request answers as an unknown address does; the mail carries a
  verify-email link; its token sets email_verified (audit email_verified); a replay is 400; a
  request for an address already verified makes no mail;
- the relay down: a reset request still answers 202; once the sink starts, the outbox's retry
  (first after 5 s) delivers the mail; no token ever appears in the server's log;
- rate limits: with 5 requests/s per address, a burst of forgot requests and of resets with an
  unknown token meets 429 with Retry-After;
- mail floods: forgot for one address from six source addresses: four 202s, then 429 with the
  "recipient" policy, the same for an address with an account and one without (any case);
  exactly four mails made; verify/request and a sign-up naming the address share the bucket;
  another address, and a sign-up without one, are not held back.
Skips when Postgres or aiosmtpd is not installed.
"""
import email.policy
import hashlib
import json
import mailbox
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.parse

from tessera_harness import Results, check_clean_exit
from test_login import TENANT, Env, basic, call, good_login, hdr, jbody, login, verify
from test_store_faults import free_port, sh

PUBLIC_URL = "https://id.example.test"
FROM = "noreply@example.test"
NEW_PASSWORD = "a brand new passphrase 42"
SINK_PYTHON = "/usr/bin/python3"   # Debian's, with python3-aiosmtpd (PATH's may lack it)
MAIL_WAIT_S = 30                   # a mail to a sink that is up: the sender is woken at once
RETRY_WAIT_S = 90                  # after the relay comes back: backoff 5 s, then 10 s, ...
VOLATILE_HEADERS = ("x-request-id", "date")
TOKEN_RE = re.compile(r"#token=([A-Za-z0-9_-]{43})\r?\n")
RESET_TTL_S = 30 * 60              # auth/recovery.c RECOVERY_RESET_TTL_S
VERIFY_TTL_S = 24 * 3600           # auth/recovery.c RECOVERY_VERIFY_TTL_S
CLOCK_SLACK_S = 120
RATE = 5                           # requests per second per address in the rate-limit check
RECIPIENT_AT_ONCE = 4              # GCRA lets one plus AUTH_RATE_RECIPIENT_AT_ONCE (3) pass at once


# ---------------------------------------------------------------------------- the SMTP sink

class Sink:
    def __init__(self, workdir):
        self.port = free_port()
        self.maildir = os.path.join(workdir, "maildir")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([SINK_PYTHON, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:%d" % self.port,
                                      "-c", "aiosmtpd.handlers.Mailbox", self.maildir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the SMTP sink did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def mails(self, to=None):
        """[(To, Subject, text body)] of the messages delivered so far."""
        if not os.path.isdir(os.path.join(self.maildir, "new")):
            return []
        out = []
        for _, msg in mailbox.Maildir(self.maildir, factory=None).items():
            parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
            part = parsed.get_body(preferencelist=("plain",))
            text = part.get_content() if part is not None else ""
            if to is None or parsed["To"].lower() == to.lower():
                out.append((str(parsed["To"]), str(parsed["Subject"]), text))
        return out

    def wait(self, to, count, timeout=MAIL_WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.mails(to)
            if len(got) >= count:
                return got
            time.sleep(0.2)
        return self.mails(to)


def aiosmtpd_present():
    return subprocess.run([SINK_PYTHON, "-c", "import aiosmtpd"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


# ---------------------------------------------------------------------------- HTTP helpers

def post(port, path, body, raw=None, content_type="application/json", source=None):
    data = raw if raw is not None else json.dumps(body).encode()
    return call(port, "POST", "/t/%s/api/v1/%s" % (TENANT, path), data, {"Content-Type": content_type},
                source=source)


def stable(resp):
    status, headers, data = resp
    return status, [h for h in headers if h[0] not in VOLATILE_HEADERS], data


def refresh(port, env, refresh_token):
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    status, _, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, urllib.parse.urlencode(form),
                           {"Content-Type": "application/x-www-form-urlencoded",
                            "Authorization": basic(env.clients["app"])})
    return status, jbody(data)


def password_login(env, port, username, password):
    return login(port, {"username": username, "password": password,
                        "client_id": env.clients["app"]["client_id"]})[0]


def sha(token):
    return hashlib.sha256(token.encode()).hexdigest()


def token_in(text):
    m = TOKEN_RE.search(text)
    return m.group(1) if m else ""


def until(fn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        if fn():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


# ---------------------------------------------------------------------------- the checks

def check_forgot(res, env, port, sink, seen):
    """The mail and what is stored; P02's equal answers. Returns alice's token."""
    known = stable(post(port, "password/forgot", {"email": "ALICE@example.test"}))
    res.check("forgot: 202 {\"status\":\"accepted\"}, no-store",
              known[0] == 202 and jbody(known[2]) == {"status": "accepted"}
              and hdr(known[1], "cache-control") == "no-store", repr(known))
    unknown = stable(post(port, "password/forgot", {"email": "nobody@example.test"}))
    res.check("P02: an unknown address: the same status, headers and body", unknown == known,
              "%r\n%r" % (unknown, known))
    got = sink.wait("alice@example.test", 1)
    res.check("forgot: one mail reaches alice's address", len(got) == 1, repr(got))
    text = got[0][2] if got else ""
    token = token_in(text)
    seen.append(token)
    res.check("forgot: subject and link <public url>/t/acme/reset-password#token=<43>",
              bool(got) and got[0][1] == "Reset your password"
              and (PUBLIC_URL + "/t/%s/reset-password#token=%s" % (TENANT, token)) in text and token, text)
    row = env.sql("SELECT encode(sha256, 'hex'), used_at IS NULL, "
                  "abs(extract(epoch FROM expires_at - now()) - %d) < %d FROM one_time_tokens "
                  "WHERE user_id = '%s' AND purpose = 'password_reset'"
                  % (RESET_TTL_S, CLOCK_SLACK_S, env.users["alice"]))
    res.check("P13: only the token's SHA-256 is stored, unused, expiring in 30 min",
              row == "%s|t|t" % sha(token), "%r vs %s" % (row, sha(token)))
    found = env.sql("SELECT count(*) FROM one_time_tokens t WHERE t::text LIKE '%%%s%%'" % token)
    res.check("P13: the token's text is in no one_time_tokens row", found == "0", found)
    cleared = env.sql("SELECT count(*) FROM email_outbox WHERE state = 'sent' AND body_text LIKE '%%%s%%'"
                      % token)
    res.check("the sent outbox row no longer holds the token", cleared == "0", cleared)
    audit = env.sql("SELECT count(*) FROM audit_log WHERE action = 'password_reset_requested' "
                    "AND actor_id = '%s'" % env.users["alice"])
    res.check("forgot: audit password_reset_requested", audit == "1", audit)
    time.sleep(1)  # what the sender would have sent for the others has had its chance
    stray = env.sql("SELECT count(*) FROM email_outbox WHERE to_address = 'nobody@example.test'")
    res.check("P02: no outbox row and no mail for an unknown address",
              stray == "0" and not sink.mails("nobody@example.test"), stray)
    return token


def check_refused_passwords(res, env, port, token):
    for label, pw in (("short", "abc12"), ("common", "iloveyou"), ("4 KiB", "a" * 4096),
                      ("NUL-holding", NEW_PASSWORD + "\u0000x")):
        status = post(port, "password/reset", {"token": token, "password": pw})[0]
        res.check("P08/P09: a %s new password: 400" % label, status == 400, repr(status))
    unused = env.sql("SELECT used_at IS NULL FROM one_time_tokens WHERE sha256 = decode('%s', 'hex')"
                     % sha(token))
    res.check("P08: a refused password does not spend the token", unused == "t", unused)
    bad = post(port, "password/reset", {"token": "x" * 43, "password": NEW_PASSWORD})[0]
    res.check("a malformed token: 400", bad == 400, repr(bad))
    missing = post(port, "password/reset", {"password": NEW_PASSWORD})[0]
    res.check("no token: 400", missing == 400, repr(missing))
    form = post(port, "password/reset", None, raw=b"token=x", content_type="application/x-www-form-urlencoded")
    res.check("not JSON: 415", form[0] == 415, repr(form[0]))


def check_reset(res, env, port, token, before):
    uid = env.users["alice"]
    env.sql("UPDATE users SET failed_logins = 7, locked_until = now() + interval '1 hour', "
            "email_verified = false WHERE id = '%s'" % uid)
    status = post(port, "password/reset", {"token": token, "password": NEW_PASSWORD})[0]
    res.check("reset: 204", status == 204, repr(status))
    res.check("reset: the mail proved the address: email_verified is true",
              env.sql("SELECT email_verified FROM users WHERE id = '%s'" % uid) == "t")
    res.check("reset: the lockout is cleared", env.sql("SELECT failed_logins, locked_until IS NULL FROM users "
                                                      "WHERE id = '%s'" % uid) == "0|t")
    res.check("reset: the old password is refused", password_login(env, port, "alice", "correct horse battery staple")
              == 401)
    res.check("reset: the new password is accepted", password_login(env, port, "alice", NEW_PASSWORD) == 200)
    for i, b in enumerate(before):
        res.check("P13: session %d's access token is refused at /verify" % i,
                  until(lambda: verify(port, b["access_token"])[0] == 401))
        rs, rb = refresh(port, env, b["refresh_token"])
        res.check("P13: session %d's refresh token is invalid_grant" % i,
                  rs == 400 and rb.get("error") == "invalid_grant", repr((rs, rb)))
    audit = env.sql("SELECT details->>'sessions' FROM audit_log WHERE action = 'password_reset' "
                    "AND actor_id = '%s'" % uid)
    res.check("reset: audit password_reset, two sessions revoked", audit == "2", audit)
    hash_before = env.sql("SELECT password_hash FROM users WHERE id = '%s'" % uid)
    replay = post(port, "password/reset", {"token": token, "password": "another good passphrase"})
    res.check("P13: the token again: 400 with a clear error", replay[0] == 400
              and "already used" in jbody(replay[2]).get("detail", ""), repr(replay))
    res.check("P13: a replay changes nothing",
              env.sql("SELECT password_hash FROM users WHERE id = '%s'" % uid) == hash_before)


def check_invalidated_and_expired(res, env, port, sink, seen):
    post(port, "password/forgot", {"email": "alice@example.test"})
    post(port, "password/forgot", {"email": "alice@example.test"})
    got = sink.wait("alice@example.test", 3)
    tokens = [token_in(m[2]) for m in got]
    fresh = [t for t in tokens if t and t not in seen]
    seen.extend(fresh)
    res.check("two more requests: two more mails", len(fresh) == 2, repr(tokens))
    if len(fresh) != 2:
        return
    hashes = env.sql("SELECT encode(sha256, 'hex') FROM one_time_tokens WHERE user_id = '%s' "
                     "AND purpose = 'password_reset' AND used_at IS NULL AND expires_at > now()"
                     % env.users["alice"]).split("\n")
    res.check("P13: only the newest reset token stays live", len(hashes) == 1, repr(hashes))
    newest = [t for t in fresh if sha(t) in hashes]
    older = [t for t in fresh if sha(t) not in hashes]
    if len(newest) != 1 or len(older) != 1:
        return
    status = post(port, "password/reset", {"token": older[0], "password": "yet another passphrase"})[0]
    res.check("P13: a token made obsolete by a newer request: 400", status == 400, repr(status))
    env.sql("UPDATE one_time_tokens SET expires_at = now() - interval '1 minute' "
            "WHERE sha256 = decode('%s', 'hex')" % sha(newest[0]))
    status = post(port, "password/reset", {"token": newest[0], "password": "yet another passphrase"})[0]
    res.check("P13: an expired token: 400", status == 400, repr(status))
    res.check("P13: ... and the password is still the reset one",
              password_login(env, port, "alice", NEW_PASSWORD) == 200)


def check_verification(res, env, port, sink, seen):
    uid = env.users["carol"]
    known = stable(post(port, "email/verify/request", {"email": "carol@example.test"}))
    unknown = stable(post(port, "email/verify/request", {"email": "nobody@example.test"}))
    res.check("verify/request: 202, the same answer as an unknown address (P02)",
              known[0] == 202 and known == unknown, "%r\n%r" % (known, unknown))
    got = sink.wait("carol@example.test", 1)
    token = token_in(got[0][2]) if got else ""
    seen.append(token)
    res.check("verify/request: the mail carries a verify-email link",
              bool(token) and got[0][1] == "Confirm your email address"
              and (PUBLIC_URL + "/t/%s/verify-email#token=%s" % (TENANT, token)) in got[0][2], repr(got))
    ttl = env.sql("SELECT abs(extract(epoch FROM expires_at - now()) - %d) < %d FROM one_time_tokens "
                  "WHERE sha256 = decode('%s', 'hex') AND purpose = 'email_verify'"
                  % (VERIFY_TTL_S, CLOCK_SLACK_S, sha(token)))
    res.check("verify/request: the token expires in 24 h", ttl == "t", ttl)
    wrong = post(port, "password/reset", {"token": token, "password": NEW_PASSWORD})[0]
    res.check("a verification token is refused by the reset endpoint", wrong == 400, repr(wrong))
    status = post(port, "email/verify", {"token": token})[0]
    res.check("verify: 204", status == 204, repr(status))
    res.check("verify: email_verified is true",
              env.sql("SELECT email_verified FROM users WHERE id = '%s'" % uid) == "t")
    audit = env.sql("SELECT count(*) FROM audit_log WHERE action = 'email_verified' AND actor_id = '%s'" % uid)
    res.check("verify: audit email_verified", audit == "1", audit)
    replay = post(port, "email/verify", {"token": token})[0]
    res.check("verify: a replay is 400", replay == 400, repr(replay))
    again = post(port, "email/verify/request", {"email": "carol@example.test"})[0]
    rows = env.sql("SELECT count(*) FROM email_outbox WHERE to_address = 'carol@example.test'")
    res.check("verify/request for a verified address: 202, no mail", again == 202 and rows == "1", rows)


def check_relay_down(res, env, port, sink, seen):
    sink.stop()
    status = post(port, "password/forgot", {"email": "bob@example.test"})[0]
    res.check("relay down: forgot still answers 202", status == 202, repr(status))
    tried = until(lambda: env.sql("SELECT attempts FROM email_outbox WHERE to_address = 'bob@example.test'")
                  not in ("", "0"), timeout=20)
    state = env.sql("SELECT state FROM email_outbox WHERE to_address = 'bob@example.test'")
    res.check("relay down: the mail was tried and waits in the outbox", tried and state == "pending",
              repr(state))
    sink.start()
    got = sink.wait("bob@example.test", 1, timeout=RETRY_WAIT_S)
    res.check("relay back: the retry delivers the mail", len(got) == 1, repr(got))
    if got:
        seen.append(token_in(got[0][2]))


def check_rate_limit(res, env):
    """The per-address GCRA bucket (auth/ratelimit.c) guards these endpoints too."""
    srv = env.server(TESSERA_RATE_ADDRESS_PER_S=RATE, TESSERA_RATE_BURST_S=1)
    try:
        time.sleep(1.2)  # a full bucket
        codes = [post(srv.port, "password/forgot", {"email": "nobody%d@example.test" % i})
                 for i in range(RATE + 10)]
        statuses = [c[0] for c in codes]
        limited = [c for c in codes if c[0] == 429]
        res.check("rate: past the address bucket, forgot answers 429 with Retry-After",
                  202 in statuses and limited and all(hdr(c[1], "retry-after") for c in limited),
                  repr(statuses))
        fake = "A" * 43
        codes = [post(srv.port, "password/reset", {"token": fake, "password": NEW_PASSWORD})[0]
                 for _ in range(RATE + 10)]
        res.check("rate: reset with unknown tokens is limited too (no hash past the bucket)",
                  429 in codes and set(codes) <= {400, 429}, repr(codes))
    finally:
        srv.kill()


def mails_to(env, address):
    return int(env.sql("SELECT count(*) FROM email_outbox WHERE lower(to_address) = lower('%s')" % address))


def check_recipient_flood(res, env):
    """Mail floods: the per-recipient bucket (AUTH_RATE_RECIPIENT_*) holds whatever the source
    address; its 429 is the same for an address with an account and one without."""
    env.sql("UPDATE tenants SET settings = settings || '{\"registration\": \"open\"}' WHERE slug = '%s'" % TENANT)
    srv = env.server()  # the default: 4 at once, then 5 an hour
    try:
        known = "dora@example.test"
        env.user("dora", email=known)
        outcomes = {}
        for address in (known, "nobody-at-all@example.test"):
            got = [post(srv.port, "password/forgot", {"email": address.upper() if i % 2 else address},
                        source="127.0.0.%d" % (20 + i)) for i in range(RECIPIENT_AT_ONCE + 2)]
            outcomes[address] = [(c[0], hdr(c[1], "ratelimit-policy")) for c in got]
            limited = got[RECIPIENT_AT_ONCE:]
            res.check("recipient: %s, from %d source addresses: 202 for the first %d, then 429 with "
                      "Retry-After and the recipient policy" % (address, len(got), RECIPIENT_AT_ONCE),
                      [c[0] for c in got[:RECIPIENT_AT_ONCE]] == [202] * RECIPIENT_AT_ONCE
                      and all(c[0] == 429 and hdr(c[1], "retry-after")
                              and hdr(c[1], "ratelimit-policy") == '"recipient";q=5;w=3600' for c in limited),
                      repr(outcomes[address]))
        res.check("recipient: the same answers for an address with an account and one without",
                  outcomes[known] == outcomes["nobody-at-all@example.test"], repr(outcomes))
        res.check("recipient: the known address got the burst's mails and no more",
                  until(lambda: mails_to(env, known) == RECIPIENT_AT_ONCE, timeout=10)
                  and mails_to(env, known) == RECIPIENT_AT_ONCE, repr(mails_to(env, known)))
        status = post(srv.port, "password/forgot", {"email": "carol@example.test"}, source="127.0.0.20")[0]
        res.check("recipient: another address from the same source is not held back", status == 202, repr(status))
        status = post(srv.port, "email/verify/request", {"email": known}, source="127.0.0.40")[0]
        res.check("recipient: verify/request shares the bucket (429)", status == 429, repr(status))
        status = post(srv.port, "register", {"username": "dora2", "password": NEW_PASSWORD, "email": known},
                      source="127.0.0.41")[0]
        res.check("recipient: a sign-up naming the address shares it too (429)", status == 429, repr(status))
        status = post(srv.port, "register", {"username": "dora3", "password": NEW_PASSWORD},
                      source="127.0.0.41")[0]
        res.check("recipient: a sign-up without an address is not held back", status == 201, repr(status))
    finally:
        srv.kill()


def run_all(res, env, sink):
    env.user("alice", email="alice@example.test")
    env.user("bob", email="bob@example.test")
    env.user("carol", email="carol@example.test")
    sink.start()
    srv = env.server(TESSERA_SMTP_URL="smtp://127.0.0.1:%d" % sink.port, TESSERA_SMTP_FROM=FROM,
                     TESSERA_PUBLIC_URL=PUBLIC_URL)
    seen = []
    try:
        before = [good_login(env, srv.port, "alice")[2] for _ in range(2)]
        res.check("alice has two sessions", all("refresh_token" in b for b in before), repr(before))
        token = check_forgot(res, env, srv.port, sink, seen)
        check_refused_passwords(res, env, srv.port, token)
        check_reset(res, env, srv.port, token, before)
        check_invalidated_and_expired(res, env, srv.port, sink, seen)
        check_verification(res, env, srv.port, sink, seen)
        check_relay_down(res, env, srv.port, sink, seen)
        log = srv.stderr_text()
        res.check("no token appears in the server's log", seen and all(t and t not in log for t in seen),
                  repr(seen))
        check_clean_exit(res, srv)
    finally:
        srv.kill()
    check_rate_limit(res, env)
    check_recipient_flood(res, env)


def main():
    res = Results("password reset and email verification")
    if sh("tessera_pg_bindir").returncode != 0:
        print("SKIP: Postgres is not installed")
        raise SystemExit(77)
    if not aiosmtpd_present():
        print("SKIP: %s has no aiosmtpd (python3-aiosmtpd)" % SINK_PYTHON)
        raise SystemExit(77)
    with tempfile.TemporaryDirectory() as workdir:
        env = Env(workdir)
        sink = Sink(workdir)
        try:
            env.prepare()
            res.run("recovery", run_all, res, env, sink)
        finally:
            sink.stop()
            env.stop()
    res.finish()


if __name__ == "__main__":
    main()
