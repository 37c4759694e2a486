#!/usr/bin/env python3
"""Two tenants holding same-named objects, through `tessera admin` and `tessera serve`
(issue 4; SECURITY T05, T06, T08).

Tenants alpha and beta each get a user alice (different passwords), a client named "web" and
their own signing keys. Then:
- T08: `admin user list`, `admin client list` and `admin keys list` of each tenant return exactly
  the rows Postgres holds for that tenant (ids compared with a direct query) and none of the other's;
- T05: alice signs up in beta although alpha has an alice (a second, independent row with its own
  password hash); Alice (any case) in alpha, or alice again in beta, is 409; each tenant's JWKS
  holds exactly its own kids; disabling alpha's alice leaves beta's enabled; deleting alpha's
  client leaves beta's;
- T06: /t/ALPHA/, /t/alpha%2F..%2Fbeta/, /t/alpha/../beta/, /t/alpha%00/ and friends (sent raw,
  not normalised by a client) answer 404 or 400, never 200 and never another tenant's keys; a
  sign-up through such a path creates nobody.
Skips when Postgres is not installed.
"""
import json
import os
import subprocess
import tempfile
import uuid

from tessera_harness import Results, Server, check_clean_exit, exchange, tessera_bin
# tests/CMakeLists.txt runs `python3 <this file>`: its folder is sys.path[0], so the sibling
# test's helpers import (its main() runs only as a script).
from test_store_faults import Postgres, request, sh, wait_ready

TENANTS = ("alpha", "beta")
PASSWORDS = {"alpha": "alpha horse battery staple", "beta": "beta horse battery staple"}
CLIENT_NAME = "web"
SHARDS = 2


class Cluster(Postgres):
    """test_store_faults' cluster, without durability (a throwaway cluster: FAST=1)."""

    def init(self):
        r = sh("tessera_pg_init '%s' '%s/run' 1 && tessera_pg_start '%s' %d '%s/log' && "
               "tessera_pg_create_db '%s' %d tessera_t tessera_t %s"
               % (self.data, self.dir, self.data, self.port, self.dir, self.data, self.port,
                  self.password))
        if r.returncode != 0:
            raise RuntimeError("postgres: " + r.stderr.decode())

    def column(self, sql):
        """The rows of a one-column query, sorted."""
        text = self.psql(sql)
        return sorted(text.split("\n")) if text else []


class Cli:
    def __init__(self, pg, key):
        self.env = dict(os.environ, TESSERA_PG_URL=pg.url, TESSERA_MASTER_KEY_FILE=key)

    def run(self, *args, stdin=None):
        """(exit code, parsed JSON or None, stderr)."""
        r = subprocess.run([tessera_bin()] + list(args), input=stdin, text=True,
                           capture_output=True, env=self.env, timeout=60)
        try:
            out = json.loads(r.stdout) if r.stdout.strip() else None
        except ValueError:
            out = None
        return r.returncode, out, r.stderr

    def must(self, *args, stdin=None):
        rc, out, err = self.run(*args, stdin=stdin)
        if rc != 0 or out is None:
            raise RuntimeError("tessera %s: exit %d: %s" % (" ".join(args), rc, err))
        return out


def of_tenant(slug):
    return "(SELECT id FROM tenants WHERE slug = '%s')" % slug


def prepare(pg, cli):
    """Both tenants, open registration, ES256 keys, client "web", alpha's alice (admin)."""
    cli.must("migrate")
    state = {}
    for slug in TENANTS:
        cli.must("admin", "tenant", "create", slug)
        pg.psql("UPDATE tenants SET settings = '{\"registration\": \"open\"}' WHERE slug = '%s'"
                % slug)
        cli.must("admin", "keys", "rotate", "--tenant", slug, "--alg", "ES256")
        client = cli.must("admin", "client", "create", "--tenant", slug, "--name", CLIENT_NAME,
                          "--grant", "client_credentials")
        state[slug] = {"client_id": client["client_id"]}
    cli.must("admin", "user", "create", "--tenant", "alpha", "--username", "alice",
             "--password-stdin", stdin=PASSWORDS["alpha"] + "\n")
    return state


def sign_up(port, path_tenant, username, password):
    status, _, body, _ = request(port, "POST", "/t/%s/api/v1/register" % path_tenant,
                                 {"username": username, "password": password})
    return status, body


def check_sign_ups(res, pg, port):
    status, body = sign_up(port, "beta", "alice", PASSWORDS["beta"])
    created = {}
    try:
        created = json.loads(body) if status == 201 else {}
    except ValueError:
        pass
    res.check("T05: alice signs up in beta although alpha has an alice (201)",
              status == 201 and created.get("username") == "alice", "%r %r" % (status, body[:200]))
    rows = pg.psql("SELECT t.slug || ' ' || u.id || ' ' || u.password_hash FROM users u "
                   "JOIN tenants t ON t.id = u.tenant_id WHERE lower(u.username) = 'alice' "
                   "ORDER BY t.slug").split("\n")
    parts = [r.split(" ", 2) for r in rows]
    res.check("T05: two independent alice rows, one per tenant, each its own password hash",
              [p[0] for p in parts] == ["alpha", "beta"] and parts[0][1] != parts[1][1] and
              parts[0][2] != parts[1][2] and parts[1][1] == created.get("id"), repr(rows))
    for tenant, name in (("alpha", "Alice"), ("alpha", "ALICE"), ("beta", "alice"),
                         ("beta", "aLiCe")):
        status, body = sign_up(port, tenant, name, "another horse battery")
        res.check("T05: %s signing up in %s is 409 (case-insensitive, within the tenant)"
                  % (name, tenant), status == 409, "%r %r" % (status, body[:200]))
    res.check("T05: the refused sign-ups stored nothing",
              pg.psql("SELECT count(*) FROM users WHERE lower(username) = 'alice'") == "2")


def check_lists(res, pg, cli, state):
    for slug in TENANTS:
        other = "beta" if slug == "alpha" else "alpha"
        out = cli.must("admin", "user", "list", "--tenant", slug)
        ids = sorted(u["id"] for u in out["users"])
        res.check("T08: admin user list of %s is exactly its rows in Postgres" % slug,
                  ids and ids == pg.column("SELECT id FROM users WHERE tenant_id = %s AND "
                                           "deleted_at IS NULL" % of_tenant(slug)), repr(out))
        res.check("T08: ... and none of %s's" % other,
                  not set(ids) & set(pg.column("SELECT id FROM users WHERE tenant_id = %s"
                                               % of_tenant(other))))
        out = cli.must("admin", "client", "list", "--tenant", slug)
        cids = sorted(c["client_id"] for c in out["clients"])
        res.check("T08: admin client list of %s is exactly its client" % slug,
                  cids == [state[slug]["client_id"]] == pg.column(
                      "SELECT client_id FROM clients WHERE tenant_id = %s AND deleted_at IS NULL"
                      % of_tenant(slug)), repr(out))
        res.check("T05: both tenants' clients are named %r, with different client_ids"
                  % CLIENT_NAME, [c["name"] for c in out["clients"]] == [CLIENT_NAME] and
                  state["alpha"]["client_id"] != state["beta"]["client_id"])
        out = cli.must("admin", "keys", "list", "--tenant", slug)
        kids = sorted(k["kid"] for k in out["keys"])
        state[slug]["kids"] = kids
        res.check("T08: admin keys list of %s is exactly its keys" % slug,
                  len(kids) == 2 and kids == pg.column("SELECT kid FROM signing_keys WHERE "
                                                       "tenant_id = %s" % of_tenant(slug)),
                  repr(out))
    res.check("T05: the tenants' kids are disjoint",
              not set(state["alpha"].get("kids", [])) & set(state["beta"].get("kids", [])))


def jwks(port, slug):
    status, _, body, _ = request(port, "GET", "/t/%s/jwks.json" % slug)
    try:
        return status, sorted(k["kid"] for k in json.loads(body)["keys"])
    except (ValueError, KeyError, TypeError):
        return status, None


def check_jwks(res, port, state):
    for slug in TENANTS:
        status, kids = jwks(port, slug)
        res.check("T05: %s's JWKS holds exactly its own kids" % slug,
                  status == 200 and kids == state[slug]["kids"], "%r %r" % (status, kids))
    status, _, body, _ = request(port, "GET", "/t/gamma/jwks.json")
    res.check("an unknown tenant's JWKS is 404", status == 404, "%r %r" % (status, body[:200]))


def check_disable_delete(res, pg, cli, state):
    rc, out, err = cli.run("admin", "user", "disable", "--tenant", "alpha", "--username", "alice")
    res.check("alpha's alice disabled", rc == 0 and out and out["disabled"] is True, err)
    flags = pg.psql("SELECT t.slug || ' ' || u.disabled FROM users u JOIN tenants t ON "
                    "t.id = u.tenant_id WHERE lower(u.username) = 'alice' ORDER BY t.slug")
    res.check("T05/T08: disabling alpha's alice leaves beta's alice enabled",
              flags == "alpha true\nbeta false", repr(flags))
    out = cli.must("admin", "user", "list", "--tenant", "beta")
    res.check("T08: beta's user list still shows its alice enabled",
              [(u["username"], u["disabled"]) for u in out["users"]] == [("alice", False)],
              repr(out))
    rc, _, err = cli.run("admin", "client", "delete", "--tenant", "beta", "--client-id",
                         state["alpha"]["client_id"])
    res.check("T08: deleting alpha's client through beta is refused (exit 1)", rc == 1, err)
    rc, out, err = cli.run("admin", "client", "delete", "--tenant", "alpha", "--client-id",
                           state["alpha"]["client_id"])
    res.check("alpha's client deleted", rc == 0, err)
    live = pg.psql("SELECT t.slug FROM clients c JOIN tenants t ON t.id = c.tenant_id "
                   "WHERE c.deleted_at IS NULL ORDER BY t.slug")
    res.check("T05/T08: deleting alpha's client leaves beta's", live == "beta", repr(live))
    out = cli.must("admin", "client", "list", "--tenant", "beta")
    res.check("T08: beta's client list still shows its client",
              [c["client_id"] for c in out["clients"]] == [state["beta"]["client_id"]], repr(out))


# Raw request targets, sent byte for byte (http.client or curl would normalise some of them).
T06_JWKS = ["/t/ALPHA/jwks.json", "/t/Beta/jwks.json", "/t/alpha%2F..%2Fbeta/jwks.json",
            "/t/alpha%2f..%2fbeta/jwks.json", "/t/alpha/../beta/jwks.json",
            "/t/alpha/%2e%2e/beta/jwks.json", "/t/alpha%00/jwks.json", "/t/beta%00/jwks.json",
            "/t/alpha/./jwks.json", "/t/./beta/jwks.json",
            "/t/alpha%2Fbeta/jwks.json", "/t/beta/jwks.json/../../alpha/jwks.json",
            "/t//beta/jwks.json", "/t/beta%20/jwks.json"]
# A percent-encoded unreserved character is the character (RFC 3986 §6.2.2.2): these name the
# tenant they decode to, so its own keys (or a refusal) are fine, the other tenant's never.
T06_SAME = {"/t/%62eta/jwks.json": "beta", "/t/%61lpha/jwks.json": "alpha",
            "/t/%61%6c%70%68%61/jwks.json": "alpha"}
T06_REGISTER = ["/t/alpha%2F..%2Fbeta/api/v1/register", "/t/alpha/../beta/api/v1/register",
                "/t/BETA/api/v1/register", "/t/beta%00/api/v1/register"]


def raw(port, method, target, body=b""):
    head = "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, target)
    if body:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    resp, _, sock = exchange(port, head.encode("latin-1") + b"\r\n" + body)
    sock.close()
    return resp


def check_paths(res, pg, port, state):
    every_kid = state["alpha"]["kids"] + state["beta"]["kids"]
    for target in T06_JWKS:
        resp = raw(port, "GET", target)
        status = resp.status if resp else None
        text = resp.body.decode("latin-1") if resp else ""
        res.check("T06: GET %s answers 404 or 400, no keys" % target,
                  status in (400, 404) and not any(k in text for k in every_kid),
                  "%r %r" % (status, text[:200]))
    for target, slug in sorted(T06_SAME.items()):
        resp = raw(port, "GET", target)
        status = resp.status if resp else None
        text = resp.body.decode("latin-1") if resp else ""
        other = state["beta" if slug == "alpha" else "alpha"]["kids"]
        mine = all(k in text for k in state[slug]["kids"])
        res.check("T06: GET %s is %s's own keys (decoded, RFC 3986 6.2.2.2) or 404/400, never "
                  "the other tenant's" % (target, slug),
                  ((status == 200 and mine) or status in (400, 404)) and
                  not any(k in text for k in other), "%r %r" % (status, text[:200]))
    users_before = pg.psql("SELECT count(*) FROM users")
    for target in T06_REGISTER:
        name = "t06_%s" % uuid.uuid4().hex[:8]
        body = json.dumps({"username": name, "password": "t06 horse battery"}).encode()
        resp = raw(port, "POST", target, body)
        status = resp.status if resp else None
        res.check("T06: POST %s answers 404 or 400" % target, status in (400, 404),
                  "%r %r" % (status, resp.body[:200] if resp else b""))
    res.check("T06: no sign-up through such a path created a user",
              pg.psql("SELECT count(*) FROM users") == users_before)


def test_isolation(res, pg, cli, state):
    srv = Server(TESSERA_SHARDS=SHARDS, TESSERA_PG_URL=pg.url, TESSERA_ARGON2_M_KIB=256,
                 TESSERA_ARGON2_T=1).start()
    try:
        res.check("ready (its Postgres connections up)", wait_ready(srv.port))
        check_sign_ups(res, pg, srv.port)
        check_lists(res, pg, cli, state)
        check_jwks(res, srv.port, state)
        check_disable_delete(res, pg, cli, state)
        check_paths(res, pg, srv.port, state)
        check_clean_exit(res, srv)
    finally:
        srv.kill()


def main():
    res = Results("two tenants with same-named users, clients and their own keys")
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
            state = prepare(pg, cli)
            res.run("tenant isolation", test_isolation, res, pg, cli, state)
        finally:
            pg.stop("fast")
    res.finish()


if __name__ == "__main__":
    main()
