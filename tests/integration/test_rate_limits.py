#!/usr/bin/env python3
"""Rate limits of the OAuth endpoints (issue 5; auth/ratelimit.c), through the serving binary
with two shards, so that most requests land on a shard that does not own their bucket and are
decided by the owner over the rings.

- Per client: past rate x burst, POST /oauth2/introspect answers 429 with Retry-After,
  RateLimit-Policy ("client";q=<rate>;w=1) and RateLimit; after Retry-After it is allowed again.
- The number allowed in a burst is exact whichever shard each connection lands on (one owner
  per bucket): with no time to refill, exactly `burst` requests pass.
- Per source address: a second client from the same address is limited by the address bucket.
- A tenant's settings.rate_limit overrides the defaults for that tenant only (T07: a bucket of
  tenant A has no effect in tenant B).
- The token endpoint is limited too (429 before any secret is checked). A client's bucket is
  keyed on the presented secret too: a stranger sending wrong secrets for a client_id from
  another address is limited in a bucket of their own and leaves the client's untouched; the
  same at the password grant of a first-party client.
Needs TESSERA_TEST_PG_URL (tests/run exports it); skips otherwise.
"""
import base64
import http.client
import json
import os
import subprocess
import tempfile
import time
import urllib.parse
import uuid

from tessera_harness import Results, Server, check_clean_exit, tessera_bin

RATE = 20         # per second, the server's defaults here
BURST_S = 1       # so a burst is 20 requests
TENANT_RATE = 5   # tenant beta's own client limit
STRANGER = "127.0.0.2"  # another peer's address (loopback is 127.0.0.0/8)


def psql(url, sql):
    r = subprocess.run(["psql", url, "-X", "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode())
    return r.stdout.decode().strip()


def admin(env, *args):
    r = subprocess.run([tessera_bin(), "admin"] + list(args), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode())
    return json.loads(r.stdout)


def post(port, path, body, client, source=None):
    """source: the local address to connect from (another 127.0.0.0/8 address: another peer)."""
    auth = base64.b64encode(("%s:%s" % (client["client_id"], client["client_secret"])).encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("POST", path, body=body, headers={"Authorization": "Basic " + auth,
                                                       "Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def burst(port, tenant, client, n, path="oauth2/introspect", body="token=not-a-token", source=None):
    """n requests on fresh connections, as fast as one thread goes."""
    return [post(port, "/t/%s/%s" % (tenant, path), body, client, source) for _ in range(n)]


def wait_ready(port, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/health/ready")
        status = conn.getresponse().status
        conn.close()
        if status == 200:
            return True
        time.sleep(0.1)
    return False


def test_client_limit(res, port, clients):
    time.sleep(BURST_S + 0.2)  # a full bucket
    answers = burst(port, "alpha", clients["alpha_gw"], RATE * BURST_S + 10)
    codes = [s for s, _ in answers]
    passed = codes.count(200)
    res.check("per client: the burst passes, then 429", 200 in codes and 429 in codes, repr(codes))
    # Requests take a few ms each, so a few tokens refill during the burst; never fewer
    # than the burst, never many more.
    res.check("one owner per bucket: the burst allowed is exact within the refill (%d..%d), got %d"
              % (RATE * BURST_S, RATE * BURST_S + 8, passed), RATE * BURST_S <= passed <= RATE * BURST_S + 8)
    limited = [h for s, h in answers if s == 429]
    first = limited[0] if limited else {}
    res.check("429 carries Retry-After, RateLimit-Policy and RateLimit",
              first.get("retry-after", "").isdigit() and first.get("ratelimit-policy") == '"client";q=%d;w=1' % RATE
              and first.get("ratelimit", "").startswith('"client";r=0;t='), repr(first))
    time.sleep(int(first.get("retry-after", "1")) + 0.1)
    res.check("after Retry-After: allowed again", burst(port, "alpha", clients["alpha_gw"], 1)[0][0] == 200)


def test_address_limit(res, port, clients):
    time.sleep(BURST_S + 0.2)
    # Two clients, one address: each client's own bucket would let RATE through, the
    # address bucket (2 x RATE) stops the pair first.
    codes = []
    for _ in range(RATE * BURST_S + 5):
        codes.append(burst(port, "alpha", clients["alpha_gw"], 1)[0][0])
        codes.append(burst(port, "alpha", clients["alpha_gw2"], 1)[0][0])
    res.check("per address: two clients from one address share its bucket (429s appear)", 429 in codes,
              repr(codes))


def test_tenant_policy(res, port, clients):
    time.sleep(BURST_S + 0.2)
    burst(port, "beta", clients["beta_gw"], 1)  # the shard loads beta's keys (and its policy)
    time.sleep(1.2)
    codes = [s for s, _ in burst(port, "beta", clients["beta_gw"], TENANT_RATE + 10)]
    res.check("a tenant's own limit applies to it (beta: %d/s)" % TENANT_RATE,
              codes.count(200) <= TENANT_RATE + 4 and 429 in codes, repr(codes))
    codes = [s for s, _ in burst(port, "alpha", clients["alpha_gw2"], 3)]
    res.check("T07: beta's exhausted buckets have no effect in alpha", codes == [200, 200, 200], repr(codes))


def test_token_limit(res, port, clients):
    time.sleep(BURST_S + 0.2)
    good = clients["alpha_gw"]
    bad = dict(good, client_secret="wrong")
    codes = [s for s, _ in burst(port, "alpha", bad, RATE * BURST_S + 10, "oauth2/token",
                                 "grant_type=client_credentials", source=STRANGER)]
    res.check("token endpoint: a stranger's wrong secrets for a client are 401, then 429 (their own bucket)",
              codes[0] == 401 and 429 in codes, repr(codes))
    codes = [s for s, _ in burst(port, "alpha", good, 3, "oauth2/token", "grant_type=client_credentials")]
    res.check("token endpoint: they did not spend the client's own bucket (its requests right after: 200)",
              codes == [200, 200, 200], repr(codes))
    codes = [s for s, _ in burst(port, "alpha", good, RATE * BURST_S + 10, "oauth2/token",
                                 "grant_type=client_credentials")]
    res.check("token endpoint: the client itself is limited past its burst (429)", 429 in codes, repr(codes))


def test_password_grant_limit(res, port, clients):
    """The password grant's client bucket is keyed on the presented secret as the token
    endpoint's is: a stranger's wrong secrets (each for another username, so no account bucket
    fills) leave the first-party client's own bucket whole."""
    time.sleep(BURST_S + 0.2)
    good = clients["alpha_app"]
    bad = dict(good, client_secret="wrong")
    codes = [post(port, "/t/alpha/oauth2/token", "grant_type=password&username=u%d&password=x" % i, bad,
                  STRANGER)[0] for i in range(RATE * BURST_S + 10)]
    res.check("password grant: a stranger's wrong client secrets are 401, then 429 (their own bucket)",
              codes[0] == 401 and 429 in codes, repr(codes))
    codes = [post(port, "/t/alpha/oauth2/token", "grant_type=password&username=alice&password=wrong", good)[0]
             for _ in range(3)]
    res.check("password grant: the client's own requests right after are answered (400 invalid_grant), not 429",
              codes == [400, 400, 400], repr(codes))


def main():
    res = Results("rate limits")
    base = os.environ.get("TESSERA_TEST_PG_URL")
    if not base:
        print("SKIP: TESSERA_TEST_PG_URL is not set")
        raise SystemExit(77)
    name = "rate_" + uuid.uuid4().hex[:12]
    psql(base, "CREATE DATABASE %s" % name)
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(base)._replace(path="/" + name))
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "master.key")
        with open(key, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(key, 0o600)
        env = dict(os.environ, TESSERA_PG_URL=url, TESSERA_MASTER_KEY_FILE=key)
        srv = None
        try:
            subprocess.run([tessera_bin(), "migrate"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)
            clients = {}
            for tenant in ("alpha", "beta"):
                admin(env, "tenant", "create", tenant)
                admin(env, "keys", "rotate", "--tenant", tenant)
            clients["alpha_gw"] = admin(env, "client", "create", "--tenant", "alpha", "--name", "gw", "--introspect")
            clients["alpha_gw2"] = admin(env, "client", "create", "--tenant", "alpha", "--name", "gw2", "--introspect")
            clients["beta_gw"] = admin(env, "client", "create", "--tenant", "beta", "--name", "gw", "--introspect")
            clients["alpha_app"] = admin(env, "client", "create", "--tenant", "alpha", "--name", "app",
                                         "--first-party", "--grant", "password")
            psql(url, "UPDATE tenants SET settings = '{\"rate_limit\": {\"client_per_s\": %d}}' WHERE slug = 'beta'"
                 % TENANT_RATE)
            srv = Server(TESSERA_PG_URL=url, TESSERA_MASTER_KEY_FILE=key, TESSERA_RATE_CLIENT_PER_S=RATE,
                         TESSERA_RATE_ADDRESS_PER_S=2 * RATE, TESSERA_RATE_BURST_S=BURST_S).start()
            res.check("ready", wait_ready(srv.port))
            res.run("client limit", test_client_limit, res, srv.port, clients)
            res.run("address limit", test_address_limit, res, srv.port, clients)
            res.run("tenant policy", test_tenant_policy, res, srv.port, clients)
            res.run("token endpoint", test_token_limit, res, srv.port, clients)
            res.run("password grant", test_password_grant_limit, res, srv.port, clients)
            check_clean_exit(res, srv)
        finally:
            if srv:
                srv.kill()
            psql(base, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
    res.finish()


if __name__ == "__main__":
    main()
