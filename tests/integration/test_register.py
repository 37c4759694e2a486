#!/usr/bin/env python3
"""Self-service sign-up, POST /t/{tenant}/api/v1/register (auth/register.c), its contract and
its password policy (issue 6; SECURITY P08, P09; NIST SP 800-63B §5.1.1.2):

- 201 with id, username, email, email_verified false, created_at, and no hash in the answer;
  the row holds an Argon2id PHC string;
- the same username, or an address another account holds, in another case: 409 (both are unique
  per tenant, case-insensitively: an address shared by two accounts would name neither at login
  and recovery, so a stranger could take both from its owner);
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
Skips when Postgres is not installed.
"""
import json
import os
import tempfile
import uuid

from test_login import call, fullwidth, login

from tessera_harness import Results, Server, check_clean_exit, tessera_bin  # noqa: F401
from test_store_faults import request, sh, wait_ready
from test_tenant_isolation import Cli, Cluster

GOOD_PASSWORD = "a long and uncommon passphrase"
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
    status, body = register(port, "open", name, GOOD_PASSWORD, email="Someone@Example.test")
    res.check("201 for a good sign-up", status == 201, repr((status, body)))
    ok = isinstance(body, dict) and body.get("username") == name and body.get("id") and \
        body.get("email_verified") is False and "created_at" in body
    res.check("... with id, username, email_verified false, created_at", ok, repr(body))
    res.check("... and no hash in the answer", "argon2" not in repr(body) and "password" not in repr(body))
    stored = pg.psql("SELECT password_hash FROM users WHERE username = '%s'" % name)
    res.check("... the row holds an Argon2id PHC string", stored.startswith("$argon2id$"), stored[:20])
    status, _ = register(port, "open", name.upper(), GOOD_PASSWORD)
    res.check("the same username in another case: 409", status == 409, repr(status))
    other = "other-" + uuid.uuid4().hex[:8]
    status, _ = register(port, "open", other, GOOD_PASSWORD, email="someone@example.TEST")
    res.check("an address another account holds (another case): 409", status == 409, repr(status))
    res.check("... and no user written", users_named(pg, other) == 0)


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


def test_register(res, pg, client_id, key):
    srv = Server(TESSERA_SHARDS=2, TESSERA_PG_URL=pg.url, TESSERA_MASTER_KEY_FILE=key, TESSERA_ARGON2_M_KIB=256,
                 TESSERA_ARGON2_T=1).start()
    try:
        res.check("ready", wait_ready(srv.port))
        check_contract(res, pg, srv.port)
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


def main():
    res = Results("sign-up and its password policy")
    if sh("tessera_pg_bindir").returncode != 0:
        print("SKIP: Postgres is not installed")
        raise SystemExit(77)
    with tempfile.TemporaryDirectory() as workdir:
        pg = Cluster(workdir)
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
            res.run("sign-up", test_register, res, pg, client_id, key)
        finally:
            pg.stop("fast")
    res.finish()


if __name__ == "__main__":
    main()
