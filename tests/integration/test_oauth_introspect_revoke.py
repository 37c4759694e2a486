#!/usr/bin/env python3
"""Introspection (RFC 7662) and revocation (RFC 7009) against their RFCs, row by row of
SECURITY.md (issue 5), through the serving binary with two shards and its own Postgres:

- O33: introspection without client authentication → 401 invalid_client with WWW-Authenticate;
  by a client not allowed to introspect → 403; neither carries token information;
- O34: a revoked token, an unknown but well-formed JWT, garbage, another tenant's token and a token
  with an altered signature → 200 {"active": false} and nothing else;
- O35: a wrong or unknown token_type_hint does not hide a token (introspection and revocation);
- O36: revocation of an unknown, malformed or already revoked token → 200 with an empty body;
- O37: client B revoking client A's token is refused with 400 invalid_request and the token stays
  active;
- O42: discovery and JWKS asked with `Host: evil.example` name only TESSERA_PUBLIC_URL;
- single flight: 30 introspections by a client no shard has cached, arriving while its row is
  locked, are all answered active after one read of the row (tessera_client_loads_total).
Skips when Postgres is not installed.
"""
import base64
import json
import os
import re
import subprocess
import tempfile
import threading
import time

from tessera_harness import Results, Server, check_clean_exit
from test_revocation import call, form, token
from test_store_faults import sh, wait_ready
from test_tenant_isolation import Cli, Cluster

TENANT = "acme"          # test_revocation's helpers speak to this tenant
OTHER = "beta"
PUBLIC_URL = "https://auth.example.test"
INTROSPECT = "/t/%s/oauth2/introspect" % TENANT
REVOKE = "/t/%s/oauth2/revoke" % TENANT
SINGLE_FLIGHT = 30       # introspections that miss the client cache together


def post(port, path, client, **fields):
    body, headers = form(client, **fields)
    return call(port, "POST", path, body, headers)


def json_of(data):
    try:
        return json.loads(data)
    except ValueError:
        return None


def altered(tok):
    head, payload, sig = tok.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 1
    return "%s.%s.%s" % (head, payload, base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("="))


def unknown_jwt(tok):
    """A token of the right shape and header whose payload names a jti nobody issued."""
    head, payload, sig = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["jti"] = "00000000-0000-7000-8000-000000000000"
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return "%s.%s.%s" % (head, body, sig)


def check_o33(res, port, c):
    tok = token(port, c["svc"])
    status, headers, data = call(port, "POST", INTROSPECT, "token=" + tok,
                                 {"Content-Type": "application/x-www-form-urlencoded"})
    body = json_of(data) or {}
    res.check("O33: introspection without client auth: 401 invalid_client with WWW-Authenticate",
              status == 401 and body.get("error") == "invalid_client" and "www-authenticate" in headers,
              repr((status, headers.get("www-authenticate"), body)))
    res.check("O33: ... and no token information", "active" not in body and "sub" not in body, repr(body))
    status, _, data = post(port, INTROSPECT, c["plain"], token=tok)
    body = json_of(data) or {}
    res.check("O33: by a client not allowed to introspect: 403, no token information",
              status == 403 and "active" not in body and "sub" not in body, repr((status, body)))


def check_o34(res, port, c):
    revoked = token(port, c["svc"])
    res.check("O34: setup: revocation 200", post(port, REVOKE, c["svc"], token=revoked)[0] == 200)
    live = token(port, c["svc"])
    cases = [("revoked", revoked), ("unknown jti, forged payload", unknown_jwt(live)),
             ("garbage", "not-a-token"), ("another tenant's", other_tenant_token(port, c)),
             ("altered signature", altered(live)), ("empty-looking", "..")]
    for label, tok in cases:
        status, _, data = post(port, INTROSPECT, c["gw"], token=tok)
        res.check("O34: %s token: 200 {\"active\": false} and nothing else" % label,
                  status == 200 and json_of(data) == {"active": False}, repr((status, data[:200])))


def other_tenant_token(port, c):
    body, headers = form(c["beta"], grant_type="client_credentials")
    status, _, data = call(port, "POST", "/t/%s/oauth2/token" % OTHER, body, headers)
    if status != 200:
        raise RuntimeError("beta token: %r %r" % (status, data[:200]))
    return json.loads(data)["access_token"]


def check_o35(res, port, c):
    tok = token(port, c["svc"])
    for hint in ("refresh_token", "no_such_kind"):
        status, _, data = post(port, INTROSPECT, c["gw"], token=tok, token_type_hint=hint)
        res.check("O35: introspection with token_type_hint=%s still finds it" % hint,
                  status == 200 and (json_of(data) or {}).get("active") is True, repr((status, data[:120])))
    status, _, _ = post(port, REVOKE, c["svc"], token=tok, token_type_hint="refresh_token")
    res.check("O35: revocation with a wrong hint: 200", status == 200, repr(status))
    status, _, data = post(port, INTROSPECT, c["gw"], token=tok)
    res.check("O35: ... and the token is revoked", json_of(data) == {"active": False}, repr(data[:120]))
    return tok


def check_o36(res, port, c, already_revoked):
    for label, tok in (("unknown", unknown_jwt(token(port, c["svc"]))), ("malformed", "a.b"),
                       ("already revoked", already_revoked)):
        status, _, data = post(port, REVOKE, c["svc"], token=tok)
        res.check("O36: revocation of the %s token: 200, empty body" % label,
                  status == 200 and data == b"", repr((status, data[:120])))


def check_o37(res, port, c):
    tok = token(port, c["svc"])
    status, _, data = post(port, REVOKE, c["other"], token=tok)
    body = json_of(data) or {}
    res.check("O37: client B revokes client A's token: 400 invalid_request",
              status == 400 and body.get("error") == "invalid_request", repr((status, body)))
    status, _, data = post(port, INTROSPECT, c["gw"], token=tok)
    res.check("O37: ... and it is still active", (json_of(data) or {}).get("active") is True, repr(data[:120]))


def check_o42(res, port):
    for path in ("/.well-known/oauth-authorization-server/t/%s" % TENANT,
                 "/t/%s/.well-known/oauth-authorization-server" % TENANT):
        status, _, data = call(port, "GET", path, headers={"Host": "evil.example"})
        doc = json_of(data) or {}
        urls = [v for v in doc.values() if isinstance(v, str) and "://" in v]
        res.check("O42: %s with Host: evil.example names only TESSERA_PUBLIC_URL" % path,
                  status == 200 and doc.get("issuer") == "%s/t/%s" % (PUBLIC_URL, TENANT) and urls and
                  all(u.startswith(PUBLIC_URL + "/") for u in urls) and b"evil" not in data,
                  repr((status, doc)))
    status, _, data = call(port, "GET", "/t/%s/jwks.json" % TENANT, headers={"Host": "evil.example"})
    res.check("O42: JWKS with Host: evil.example: 200, no trace of the host",
              status == 200 and b"evil" not in data and (json_of(data) or {}).get("keys"), repr(status))


def prepare(cli):
    cli.must("migrate")
    for slug in (TENANT, OTHER):
        cli.must("admin", "tenant", "create", slug)
        cli.must("admin", "keys", "rotate", "--tenant", slug)
    clients = {}
    for name, slug, extra in (("svc", TENANT, ["--introspect"]), ("other", TENANT, ["--introspect"]),
                              ("gw", TENANT, ["--introspect"]), ("plain", TENANT, []),
                              ("beta", OTHER, ["--introspect"])):
        clients[name] = cli.must("admin", "client", "create", "--tenant", slug, "--name", name,
                                 "--grant", "client_credentials", "--scope", "read write", *extra)
    return clients


def test_rows(res, pg, clients, key):
    srv = Server(TESSERA_SHARDS=2, TESSERA_PG_URL=pg.url, TESSERA_MASTER_KEY_FILE=key,
                 TESSERA_PUBLIC_URL=PUBLIC_URL, TESSERA_RATE_CLIENT_PER_S=0,
                 TESSERA_RATE_ADDRESS_PER_S=0).start()
    try:
        res.check("ready", wait_ready(srv.port))
        check_o33(res, srv.port, clients)
        check_o34(res, srv.port, clients)
        revoked = check_o35(res, srv.port, clients)
        check_o36(res, srv.port, clients, revoked)
        check_o37(res, srv.port, clients)
        check_o42(res, srv.port)
        check_clean_exit(res, srv)
    finally:
        srv.kill()


def client_loads(port):
    status, _, data = call(port, "GET", "/metrics")
    m = re.search(r"^tessera_client_loads_total (\d+)$", data.decode(), re.M) if status == 200 else None
    return int(m.group(1)) if m else -1


def test_single_flight(res, pg, clients, key):
    """A shard reads a client's row once for all the introspections that miss its cache meanwhile
    (auth/client.c): the row is held back by a lock while SINGLE_FLIGHT requests arrive."""
    srv = Server(TESSERA_SHARDS=1, TESSERA_PG_URL=pg.url, TESSERA_MASTER_KEY_FILE=key,
                 TESSERA_RATE_CLIENT_PER_S=0, TESSERA_RATE_ADDRESS_PER_S=0).start()
    locker = None
    try:
        res.check("ready (single flight)", wait_ready(srv.port))
        tok = token(srv.port, clients["svc"])  # gw's row is not cached on this server yet
        locker = subprocess.Popen(["psql", pg.url, "-X", "-qAt"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        locker.stdin.write("BEGIN; LOCK TABLE clients IN ACCESS EXCLUSIVE MODE; SELECT 1;\n")
        locker.stdin.flush()
        time.sleep(0.3)
        before = client_loads(srv.port)
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(post(srv.port, INTROSPECT, clients["gw"],
                                                                       token=tok)))
                   for _ in range(SINGLE_FLIGHT)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # every request has arrived and waits (the row is locked)
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(30)
        for t in threads:
            t.join(30)
        loads = client_loads(srv.port) - before
        good = [a for a in answers if a[0] == 200 and (json_of(a[2]) or {}).get("active") is True]
        res.check("%d introspections by a client not cached, its row locked: every one active" % SINGLE_FLIGHT,
                  len(good) == SINGLE_FLIGHT, repr([a[0] for a in answers]))
        res.check("... and the shard read the client's row once for all of them (%d reads)" % loads, loads == 1,
                  repr(loads))
        check_clean_exit(res, srv, "server exits 0 on SIGTERM (single flight)")
    finally:
        if locker is not None and locker.poll() is None:
            locker.kill()
        srv.kill()


def main():
    res = Results("introspection and revocation, row by row")
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
            clients = prepare(Cli(pg, key))
            res.run("O33-O37, O42", test_rows, res, pg, clients, key)
            res.run("client single flight", test_single_flight, res, pg, clients, key)
        finally:
            pg.stop("fast")
    res.finish()


if __name__ == "__main__":
    main()
