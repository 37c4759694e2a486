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
- registration closed (the default) is 403, an unknown tenant 404.
Skips when Postgres is not installed.
"""
import json
import os
import tempfile
import uuid

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


def test_register(res, pg):
    srv = Server(TESSERA_SHARDS=2, TESSERA_PG_URL=pg.url, TESSERA_ARGON2_M_KIB=256,
                 TESSERA_ARGON2_T=1).start()
    try:
        res.check("ready", wait_ready(srv.port))
        check_contract(res, pg, srv.port)
        check_policy(res, pg, srv.port)
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
            res.run("sign-up", test_register, res, pg)
        finally:
            pg.stop("fast")
    res.finish()


if __name__ == "__main__":
    main()
