#!/usr/bin/env python3
"""Self-service sign-up, POST /t/{tenant}/api/v1/register (auth/register.c), its contract and
its password policy (issue 6; SECURITY P08, P09; NIST SP 800-63B §5.1.1.2):

- without an address: 201 with id, username, email null, email_verified false, created_at, and
  no hash in the answer; the row holds an Argon2id PHC string;
- the same username in another case: 409 (usernames are unique per tenant, case-insensitively);
- P02 (OWASP ASVS 4.0 §2.5): sign-up WITH an address answers 202 {"status":
  "verification_sent", "username", "email"} whether the address is free or already held by an
  account (in another case): the same status, headers (but Date and X-Request-Id) and body
  bytes (the request's own username and address aside). A free address: the user is made,
  unverified, and receives (through the outbox, in the aiosmtpd sink) the verification mail of
  /email/verify/request, whose link's token verifies the address at POST /email/verify. A held
  address: no user is made (an address names one live account per tenant: shared, it would
  name neither at login and recovery), its holder receives a "someone tried to sign up" mail
  without any token, and an audit row signup_address_taken (actor system, target the holder)
  is written. Usernames are public handles (as in Keycloak and Auth0), so a taken username is
  still 409, with a free address or a held one (the username wins), and no mail is queued;
- a password shorter than 8, one on the common-password list in any ASCII case ("Password",
  "iloveyou", "12345678"), one over 1,024 bytes, one with a NUL: 400 with a problem body, and no
  row written;
- registration closed (the default) is 403, an unknown tenant 404;
- P06 (RFC 8265 §3.3): "P06-Alice-x" is stored and answered as "p06-alice-x"; "P06-ALICE-X"
  and the fullwidth forms are the same name (409); Cyrillic-а "p06-аlice-x" is another
  account (201); surrounding spaces (ASCII or U+3000: refused where a name is set, as
  before; login trims them), a space inside, a zero-width space, a control character, only
  spaces, a lone surrogate, invalid UTF-8 bytes: 400 and no row;
- P07 (RFC 8265 §4.2): a password signed up as NFD logs in typed as NFC (and NFD); invalid
  UTF-8 (raw bytes, a lone surrogate escape) or a control character in the password: 400,
  no row.
Skips when Postgres is not installed; without aiosmtpd the mails are read from email_outbox.
"""
import json
import os
import tempfile
import time
import uuid

from test_login import call, fullwidth, login

from tessera_harness import Results, Server, check_clean_exit, tessera_bin  # noqa: F401
from test_store_faults import request, sh, wait_ready
from test_tenant_isolation import Cli, Cluster
from test_recovery import Sink, aiosmtpd_present, token_in

GOOD_PASSWORD = "a long and uncommon passphrase"
PUBLIC_URL = "https://id.example.test"
MAIL_FROM = "noreply@example.test"
VOLATILE_HEADERS = ("date", "x-request-id")
VERIFY_SUBJECT = "Confirm your email address"           # auth/recovery.c's verification mail
TAKEN_SUBJECT = "Someone tried to sign up with your address"  # auth/register.c
OUTBOX_WAIT_S = 30                 # the outbox sender is woken at once; a sanitizer build is slow
REFUSED = [
    ("P08: shorter than 8", "short7!"),
    ("common password (any case)", "PassWord"),
    ("common password", "iloveyou"),
    ("common password", "12345678"),
    ("P08: over 1,024 bytes", "x" * 1025),
    ("P09: a NUL inside", "correct\u0000horse battery"),
]


def register(port, tenant, username, password, email=None):
    body = {"username": username, "password": password}
    if email:
        body["email"] = email
    status, _, data, _ = request(port, "POST", "/t/%s/api/v1/register" % tenant, body)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data


def users_named(pg, name):
    return int(pg.psql("SELECT count(*) FROM users WHERE lower(username) = lower('%s')" % name))


def check_contract(res, pg, port):
    name = "user-" + uuid.uuid4().hex[:8]
    status, body = register(port, "open", name, GOOD_PASSWORD)
    res.check("201 for a good sign-up", status == 201, repr((status, body)))
    ok = isinstance(body, dict) and body.get("username") == name and body.get("id") and \
        body.get("email") is None and body.get("email_verified") is False and "created_at" in body
    res.check("... with id, username, email_verified false, created_at", ok, repr(body))
    res.check("... and no hash in the answer", "argon2" not in repr(body) and "password" not in repr(body))
    stored = pg.psql("SELECT password_hash FROM users WHERE username = '%s'" % name)
    res.check("... the row holds an Argon2id PHC string", stored.startswith("$argon2id$"), stored[:20])
    status, _ = register(port, "open", name.upper(), GOOD_PASSWORD)
    res.check("the same username in another case: 409", status == 409, repr(status))


# ---------------------------------------------------------------------------- P02

def sign_up_raw(port, username, email):
    """(status, headers without the volatile ones, body bytes) of a sign-up with an address."""
    body = {"username": username, "password": GOOD_PASSWORD, "email": email}
    status, headers, data, _ = request(port, "POST", "/t/open/api/v1/register", body)
    return status, {k: v for k, v in headers.items() if k not in VOLATILE_HEADERS}, data


class Mails:
    """The mails sent to an address: from the aiosmtpd sink when there is one, else read from
    email_outbox (the server then has no relay and the rows stay pending with their text)."""

    def __init__(self, pg, sink):
        self.pg, self.sink = pg, sink

    def to(self, address, count):
        """[(subject, text)], waiting until count of them arrived (or the wait ran out)."""
        deadline = time.monotonic() + OUTBOX_WAIT_S
        while True:
            got = self._now(address)
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    def _now(self, address):
        if self.sink is not None:
            return [(m[1], m[2]) for m in self.sink.mails(address)]
        ids = self.pg.psql("SELECT id FROM email_outbox WHERE lower(to_address) = lower('%s') "
                           "ORDER BY created_at" % address).split()
        return [(self.pg.psql("SELECT subject FROM email_outbox WHERE id = '%s'" % i),
                 self.pg.psql("SELECT body_text FROM email_outbox WHERE id = '%s'" % i) + "\r\n")
                for i in ids]


def outbox_rows(pg, address):
    return int(pg.psql("SELECT count(*) FROM email_outbox WHERE lower(to_address) = lower('%s')"
                       % address))


def check_p02_answers(res, pg, port, tag):
    """A free and a held address answer alike; returns (holder's name, address) or None."""
    holder, other = "p02-a-" + tag, "p02-b-" + tag
    address = "p02-x-%s@example.test" % tag
    held = address.upper()   # the same length: equal answers have equal Content-Length too
    free = sign_up_raw(port, holder, address)
    taken = sign_up_raw(port, other, held)
    expected = {"status": "verification_sent", "username": holder, "email": address}
    res.check("P02: a free address: 202 {status verification_sent, username, email}, no id",
              free[0] == 202 and json.loads(free[2] or b"null") == expected, repr(free))
    res.check("P02: ... Cache-Control no-store", free[1].get("cache-control") == "no-store",
              repr(free[1]))
    res.check("P02: an address another account holds: the same status and headers (but Date, "
              "X-Request-Id)", taken[:2] == free[:2], "%r\n%r" % (taken[:2], free[:2]))
    same = free[2].replace(holder.encode(), other.encode()).replace(address.encode(), held.encode())
    res.check("P02: ... and the same body, but for the request's own username and address",
              taken[2] == same, "%r\n%r" % (taken[2], free[2]))
    res.check("P02: ... and no user made for it", users_named(pg, other) == 0)
    state = pg.psql("SELECT email, email_verified FROM users WHERE username = '%s'" % holder)
    res.check("P02: the free address's user is made, unverified", state == address + "|f", state)
    return (holder, address) if free[0] == 202 else None


def check_p02_mails(res, pg, port, mails, holder, address):
    """The holder's two mails: the verification one (its link verifies) and the "someone tried"."""
    got = mails.to(address, 2)
    subjects = sorted(m[0] for m in got)
    res.check("P02: the address receives the verification mail and the \"someone tried\" mail",
              subjects == sorted([VERIFY_SUBJECT, TAKEN_SUBJECT]), repr(got))
    tried = [m[1] for m in got if m[0] == TAKEN_SUBJECT]
    res.check("P02: ... \"someone tried\" says log in or reset, and carries no token",
              tried and "tried to create an account" in tried[0]
              and "reset your password" in tried[0] and "token" not in tried[0], repr(tried))
    uid = pg.psql("SELECT id FROM users WHERE username = '%s'" % holder)
    audit = pg.psql("SELECT actor_kind, target_kind, target_id FROM audit_log "
                    "WHERE action = 'signup_address_taken' AND target_id = '%s'" % uid)
    res.check("P02: ... audit signup_address_taken by the system, target the holder",
              audit == "system|user|" + uid, audit)
    text = [m[1] for m in got if m[0] == VERIFY_SUBJECT]
    token = token_in(text[0]) if text else ""
    res.check("P02: the verification mail has /email/verify/request's link",
              token and (PUBLIC_URL + "/t/open/verify-email#token=" + token) in text[0], repr(text))
    status, _, _, _ = request(port, "POST", "/t/open/api/v1/email/verify", {"token": token})
    verified = pg.psql("SELECT email_verified FROM users WHERE id = '%s'" % uid)
    res.check("P02: ... its token verifies the address (204)", status == 204 and verified == "t",
              repr((status, verified)))


def check_p02(res, pg, port, mails):
    tag = uuid.uuid4().hex[:8]
    found = check_p02_answers(res, pg, port, tag)
    if found is not None:
        check_p02_mails(res, pg, port, mails, *found)
    holder = "p02-a-" + tag
    fresh = "p02-y-%s@example.test" % tag
    held = "p02-x-%s@example.test" % tag
    for label, email in (("a free address", fresh), ("the address it holds", held)):
        status = sign_up_raw(port, holder.upper(), email)[0]
        res.check("P02: a taken username (usernames are public handles) with %s: 409" % label,
                  status == 409, repr(status))
    time.sleep(1)  # what the sender would have sent has had its chance
    res.check("P02: ... and no mail queued for a 409", outbox_rows(pg, fresh) == 0
              and outbox_rows(pg, held) == 2)


def check_policy(res, pg, port):
    for label, password in REFUSED:
        name = "refused-" + uuid.uuid4().hex[:8]
        status, body = register(port, "open", name, password)
        detail = body.get("detail", "") if isinstance(body, dict) else ""
        res.check("%s: 400 with a problem body" % label, status == 400 and detail, repr((status, body)))
        res.check("... and no user written", users_named(pg, name) == 0)


def raw_register(port, tenant, body_bytes):
    return call(port, "POST", "/t/%s/api/v1/register" % tenant, body_bytes,
                {"Content-Type": "application/json"})[0]


def check_p06(res, pg, port):
    tag = uuid.uuid4().hex[:8]
    name = "p06-alice-" + tag
    status, body = register(port, "open", "P06-Alice-" + tag, GOOD_PASSWORD)
    res.check("P06: 201, the username answered normalised", status == 201 and isinstance(body, dict)
              and body.get("username") == name, repr((status, body)))
    stored = pg.psql("SELECT username FROM users WHERE lower(username) = '%s'" % name)
    res.check("P06: ... and stored normalised", stored == name, stored)
    for label, variant in (("upper case", name.upper()), ("fullwidth", fullwidth(name)),
                           ("fullwidth upper case", fullwidth(name.upper()))):
        status, _ = register(port, "open", variant, GOOD_PASSWORD)
        res.check("P06: %s names the same account: 409" % label, status == 409, repr(status))
    # Surrounding spaces are refused where a name is set, as before (login trims them).
    for label, variant in (("surrounding spaces", " %s " % name), ("ideographic spaces", "\u3000%s\u3000" % name)):
        status, _ = register(port, "open", variant, GOOD_PASSWORD)
        res.check("P06: %s: 400" % label, status == 400, repr(status))
    res.check("P06: ... one row for all of them", users_named(pg, name) == 1)
    cyrillic = name.replace("a", "\u0430", 1)
    status, body = register(port, "open", cyrillic, GOOD_PASSWORD)
    res.check("P06: Cyrillic-а is a different account: 201", status == 201
              and isinstance(body, dict) and body.get("username") == cyrillic, repr((status, body)))
    for label, bad in (("a space inside", "p06 bob " + tag), ("a zero-width space", "p06\u200bbob" + tag),
                       ("a control character", "p06\tbob" + tag), ("only spaces", "   "),
                       ("a lone surrogate", "p06\udc80bob" + tag)):
        status, body = register(port, "open", bad, GOOD_PASSWORD)
        res.check("P06: username with %s: 400" % label, status == 400, repr((status, body)))
    raw = b'{"username": "p06-bob-\xff\xfe", "password": "%s"}' % GOOD_PASSWORD.encode()
    res.check("P06: username of invalid UTF-8 bytes: 400", raw_register(port, "open", raw) == 400)
    res.check("P06: ... and no row for any of them",
              int(pg.psql("SELECT count(*) FROM users WHERE username LIKE 'p06%%bob%%'")) == 0)


def check_p07(res, pg, port, client_id):
    nfc = "Cr\u00e8me br\u00fbl\u00e9e, s'il vous pla\u00eet"
    nfd = "Cre\u0300me bru\u0302le\u0301e, s'il vous plai\u0302t"
    name = "p07-" + uuid.uuid4().hex[:8]
    status, body = register(port, "open", name, nfd)
    res.check("P07: sign-up with an NFD password: 201", status == 201, repr((status, body)))
    for label, pw in (("NFC", nfc), ("NFD", nfd)):
        st = login(port, {"username": name, "password": pw, "client_id": client_id}, tenant="open")[0]
        res.check("P07: ... logs in typed as %s" % label, st == 200, repr(st))
    for label, pw in (("a lone surrogate", "long enough \udc80 pass"), ("a control character", nfc + "\u0007")):
        other = "p07-bad-" + uuid.uuid4().hex[:8]
        status, body = register(port, "open", other, pw)
        res.check("P07: a password with %s: 400" % label, status == 400 and users_named(pg, other) == 0,
                  repr((status, body)))
    other = "p07-bad-" + uuid.uuid4().hex[:8]
    raw = b'{"username": "%s", "password": "caf\xe9 au lait \xff"}' % other.encode()
    res.check("P07: a password of invalid UTF-8 bytes: 400, no row",
              raw_register(port, "open", raw) == 400 and users_named(pg, other) == 0)


def test_register(res, pg, client_id, key, sink):
    relay = {} if sink is None else dict(TESSERA_SMTP_URL="smtp://127.0.0.1:%d" % sink.port,
                                         TESSERA_SMTP_FROM=MAIL_FROM)
    srv = Server(TESSERA_SHARDS=2, TESSERA_PG_URL=pg.url, TESSERA_MASTER_KEY_FILE=key, TESSERA_ARGON2_M_KIB=256,
                 TESSERA_ARGON2_T=1, TESSERA_PUBLIC_URL=PUBLIC_URL, **relay).start()
    try:
        res.check("ready", wait_ready(srv.port))
        check_contract(res, pg, srv.port)
        check_p02(res, pg, srv.port, Mails(pg, sink))
        check_policy(res, pg, srv.port)
        check_p06(res, pg, srv.port)
        check_p07(res, pg, srv.port, client_id)
        status, _ = register(srv.port, "closed", "someone", GOOD_PASSWORD)
        res.check("registration closed (the default): 403", status == 403, repr(status))
        status, _ = register(srv.port, "no-such-tenant", "someone", GOOD_PASSWORD)
        res.check("an unknown tenant: 404", status == 404, repr(status))
        check_clean_exit(res, srv)
    finally:
        srv.kill()


RATE_BURST_TRIES = 4  # a source address with 1/s and a 1 s burst: the third at once is refused


def test_rate_limited(res, pg, key):
    """Sign-up takes the source address's bucket (a hash and maybe a mail per request)."""
    srv = Server(TESSERA_PG_URL=pg.url, TESSERA_MASTER_KEY_FILE=key, TESSERA_ARGON2_M_KIB=256, TESSERA_ARGON2_T=1,
                 TESSERA_RATE_ADDRESS_PER_S=1, TESSERA_RATE_BURST_S=1).start()
    try:
        res.check("ready", wait_ready(srv.port))
        answers = []
        for i in range(RATE_BURST_TRIES):
            status, headers, _, took = request(srv.port, "POST", "/t/open/api/v1/register",
                                            {"username": "rate-%d" % i, "password": GOOD_PASSWORD})
            answers.append((status, headers.get("retry-after"), round(took, 3)))
        limited = [i for i, a in enumerate(answers) if a[0] == 429]
        res.check("sign-up past the address's burst: 429 with Retry-After",
                  answers[0][0] == 201 and limited and all(answers[i][1] for i in limited), repr(answers))
        res.check("... and the refused sign-ups created nobody",
                  all(users_named(pg, "rate-%d" % i) == 0 for i in limited), repr(limited))
        check_clean_exit(res, srv, "rate-limited server exits 0 on SIGTERM, no sanitizer report")
    finally:
        srv.kill()


def main():
    res = Results("sign-up and its password policy")
    if sh("tessera_pg_bindir").returncode != 0:
        print("SKIP: Postgres is not installed")
        raise SystemExit(77)
    with tempfile.TemporaryDirectory() as workdir:
        pg = Cluster(workdir)
        sink = Sink(workdir) if aiosmtpd_present() else None  # else mails are read from the outbox
        key = os.path.join(workdir, "master.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        try:
            pg.init()
            cli = Cli(pg, key)
            cli.must("migrate")
            for slug in ("open", "closed"):
                cli.must("admin", "tenant", "create", slug)
            pg.psql("UPDATE tenants SET settings = '{\"registration\": \"open\"}' WHERE slug = 'open'")
            cli.must("admin", "keys", "rotate", "--tenant", "open")
            client_id = cli.must("admin", "client", "create", "--tenant", "open", "--name", "app", "--scope",
                                 "read", "--first-party")["client_id"]
            if sink is not None:
                sink.start()
            res.run("sign-up", test_register, res, pg, client_id, key, sink)
            res.run("rate limit", test_rate_limited, res, pg, key)
        finally:
            if sink is not None:
                sink.stop()
            pg.stop("fast")
    res.finish()


if __name__ == "__main__":
    main()
