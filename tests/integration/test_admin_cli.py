"""`tessera migrate` and `tessera admin` through the real binary, against the Postgres that
tests/run starts (TESSERA_TEST_PG_URL; exit 77 when unset). The test makes its own database
and drops it at the end.

Proves: F18, two `tessera migrate` processes started together both succeed and apply each file once;
migrate is a no-op the second time; admin refuses an unmigrated database; every admin subcommand
works and answers one JSON object; its errors have their exit codes (duplicate tenant 1, unknown
tenant 1, bad slug 2, bad grant 2, short password 2, unset URL 2, unreachable URL 1); T05/T08:
tenants holding a same-named client and user see only their own in every list, and disabling a
user in one leaves the other's alone; secrets: the client secret appears once (at creation) and
never in a list or on stderr, the password never on stdout or stderr, no private key member or
password hash is ever printed.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_harness import Results, tessera_bin  # noqa: E402

# A run of the sanitizer build with Argon2id (19 MiB) or RSA key generation takes about a
# second; this bounds a hung command well below ctest's limit.
RUN_TIMEOUT_S = 60
PASSWORD = "correct horse battery staple"


def psql(url, sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                   check=True, capture_output=True, timeout=RUN_TIMEOUT_S)


def url_with_db(url, name):
    m = re.match(r"^(postgres(?:ql)?://[^/]+)/[^?]*(\?.*)?$", url)
    if not m:
        raise ValueError("TESSERA_TEST_PG_URL has no database path")
    return m.group(1) + "/" + name + (m.group(2) or "")


class Cli:
    def __init__(self, env):
        self.env = env
        self.stderr_all = ""
        self.stdout_all = ""

    def run(self, *args, stdin=None, env=None):
        """Runs tessera with args; returns (exit code, parsed JSON or None, stderr)."""
        proc = subprocess.run([tessera_bin()] + list(args), input=stdin, text=True,
                              capture_output=True, env=env or self.env, timeout=RUN_TIMEOUT_S)
        self.stderr_all += proc.stderr
        self.stdout_all += proc.stdout
        try:
            out = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            out = None
        return proc.returncode, out, proc.stderr


def check_migrate(r, cli):
    rc, _, err = cli.run("admin", "tenant", "list")
    r.check("admin refuses an unmigrated database (exit 1)", rc == 1 and "migrate" in err, err)
    procs = [subprocess.Popen([tessera_bin(), "migrate"], env=cli.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=RUN_TIMEOUT_S) for p in procs]
    ok = all(p.returncode == 0 for p in procs)
    applied = [json.loads(o[0])["applied"] for o in outs] if ok else []
    required = json.loads(outs[0][0])["required_version"] if ok else -1
    r.check("F18: two concurrent migrate processes both succeed", ok, repr(outs))
    r.check("F18: each migration applied exactly once (one schema)", ok and sum(applied) == required, repr(outs))
    rc, out, _ = cli.run("migrate")
    r.check("migrate again is a no-op", rc == 0 and out["applied"] == 0, repr(out))
    rc, out, _ = cli.run("migrate", "--status")
    r.check("migrate --status reports the version",
            rc == 0 and out["schema_version"] == out["required_version"] == required, repr(out))
    rc, _, _ = cli.run("migrate", "--bogus")
    r.check("migrate bad argument exits 2", rc == 2)


def check_tenants(r, cli):
    rc, out, _ = cli.run("admin", "tenant", "create", "acme", "--name", "Acme Inc")
    r.check("tenant create", rc == 0 and out["slug"] == "acme" and out["name"] == "Acme Inc")
    rc, _, _ = cli.run("admin", "tenant", "create", "beta")
    r.check("tenant create (name defaults to slug)", rc == 0)
    rc, _, err = cli.run("admin", "tenant", "create", "acme")
    r.check("duplicate tenant exits 1", rc == 1 and "already exists" in err, err)
    for bad in ("ACME", "a_b", "x" * 64, "acme/../beta"):
        rc, _, _ = cli.run("admin", "tenant", "create", bad)
        r.check("bad slug %r exits 2" % bad[:10], rc == 2)
    rc, out, _ = cli.run("admin", "tenant", "list")
    r.check("tenant list", rc == 0 and [t["slug"] for t in out["tenants"]] == ["acme", "beta"])


def create_client(r, cli, tenant):
    rc, out, _ = cli.run("admin", "client", "create", "--tenant", tenant, "--name", "web",
                         "--grant", "client_credentials", "--grant", "authorization_code",
                         "--redirect-uri", "https://app.example/cb", "--scope", "openid read",
                         "--introspect")
    ok = rc == 0 and out and len(out.get("client_secret", "")) == 43
    r.check("client create in %s" % tenant, ok, repr(out))
    if ok:
        r.check("client create echoes its settings",
                out["grants"] == ["client_credentials", "authorization_code"] and
                out["scopes"] == ["openid", "read"] and out["can_introspect"] is True and
                out["first_party"] is False and out["tenant"] == tenant, repr(out))
    return out or {}


def check_clients(r, cli):
    a = create_client(r, cli, "acme")
    b = create_client(r, cli, "beta")
    for tenant, mine, other in (("acme", a, b), ("beta", b, a)):
        rc, out, _ = cli.run("admin", "client", "list", "--tenant", tenant)
        ids = [c["client_id"] for c in (out or {}).get("clients", [])]
        r.check("T08 client list of %s shows only its client" % tenant,
                rc == 0 and ids == [mine.get("client_id")], repr(out))
        text = json.dumps(out)
        r.check("client list of %s prints no secret" % tenant,
                "secret" not in text and mine.get("client_secret", "?") not in text)
    rc, _, err = cli.run("admin", "client", "delete", "--tenant", "beta", "--client-id",
                         a.get("client_id", "x"))
    r.check("T08 client delete through another tenant exits 1", rc == 1, err)
    rc, out, _ = cli.run("admin", "client", "delete", "--tenant", "acme", "--client-id",
                         a.get("client_id", "x"))
    r.check("client delete", rc == 0 and out["client_id"] == a.get("client_id"))
    rc, out, _ = cli.run("admin", "client", "list", "--tenant", "acme")
    r.check("deleted client is gone from the list", rc == 0 and out["clients"] == [])
    rc, _, err = cli.run("admin", "client", "create", "--tenant", "nope", "--name", "web")
    r.check("client create in an unknown tenant exits 1", rc == 1 and "unknown tenant" in err)
    bad = [["--grant", "implicit"], ["--grant", "password"],
           ["--grant", "authorization_code"],
           ["--grant", "authorization_code", "--redirect-uri", "https://a.example/#x"],
           ["--redirect-uri", "not a uri"], ["--scope", "a\\b"]]
    for extra in bad:
        rc, _, _ = cli.run("admin", "client", "create", "--tenant", "acme", "--name", "x",
                           *extra)
        r.check("client create %s exits 2" % " ".join(extra), rc == 2)
    rc, out, _ = cli.run("admin", "client", "create", "--tenant", "acme", "--name", "cli",
                         "--grant", "password", "--first-party")
    r.check("password grant with --first-party", rc == 0 and out["first_party"] is True)


def check_users(r, cli):
    for tenant in ("acme", "beta"):
        rc, out, _ = cli.run("admin", "user", "create", "--tenant", tenant, "--username",
                             "alice", "--email", "alice@example.com", "--password-stdin",
                             stdin=PASSWORD + "\n")
        r.check("user create in %s" % tenant, rc == 0 and out["username"] == "alice", repr(out))
    rc, _, err = cli.run("admin", "user", "create", "--tenant", "acme", "--username", "ALICE",
                         "--password-stdin", stdin=PASSWORD)
    r.check("duplicate username (any case) exits 1", rc == 1 and "already" in err, err)
    rc, _, _ = cli.run("admin", "user", "create", "--tenant", "acme", "--username", "bob",
                       "--password-stdin", stdin="short\n")
    r.check("short password exits 2", rc == 2)
    rc, _, _ = cli.run("admin", "user", "create", "--tenant", "acme", "--username", "bob")
    r.check("user create without --password-stdin exits 2", rc == 2)
    rc, out, _ = cli.run("admin", "user", "disable", "--tenant", "acme", "--username", "Alice")
    r.check("user disable", rc == 0 and out["disabled"] is True)
    rc, _, _ = cli.run("admin", "user", "disable", "--tenant", "acme", "--username", "carol")
    r.check("user disable of an unknown user exits 1", rc == 1)
    rc, out, _ = cli.run("admin", "user", "list", "--tenant", "beta")
    users = (out or {}).get("users", [])
    r.check("T07/T08 disabling acme's alice leaves beta's alice enabled",
            rc == 0 and len(users) == 1 and users[0]["disabled"] is False, repr(out))
    rc, out, _ = cli.run("admin", "user", "list", "--tenant", "acme")
    r.check("user list prints no password hash",
            rc == 0 and "argon2" not in json.dumps(out) and "password" not in json.dumps(out))
    cheap = dict(cli.env, TESSERA_ARGON2_M_KIB="4096", TESSERA_ARGON2_T="1")
    rc, out, err = cli.run("admin", "user", "create", "--tenant", "acme", "--username", "dan",
                           "--password-stdin", stdin=PASSWORD, env=cheap)
    stored = subprocess.run(["psql", "-X", "-A", "-t", "-d", cli.env["TESSERA_PG_URL"], "-c",
                             "SELECT password_hash FROM users WHERE username = 'dan'"],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S).stdout.strip()
    r.check("user create hashes with the server's TESSERA_ARGON2_* (m=4096, t=1)",
            rc == 0 and stored.startswith("$argon2id$v=19$m=4096,t=1,p=1$"), "%s %s" % (stored[:40], err))
    rc, _, err = cli.run("admin", "user", "create", "--tenant", "acme", "--username", "eve",
                         "--password-stdin", stdin=PASSWORD, env=dict(cli.env, TESSERA_ARGON2_T="0"))
    r.check("an invalid TESSERA_ARGON2_T exits 2 and says which", rc == 2 and "TESSERA_ARGON2_T" in err, err)


def check_keys(r, cli, tmp):
    rc, _, err = cli.run("admin", "keys", "rotate", "--tenant", "acme")
    r.check("keys rotate without a master key exits 2", rc == 2, err)
    key = os.path.join(tmp, "master.key")
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    env = dict(cli.env, TESSERA_MASTER_KEY_FILE=key)
    rc, out, _ = cli.run("admin", "keys", "rotate", "--tenant", "acme", "--alg", "ES256", env=env)
    states = sorted(k["state"] for k in (out or {}).get("keys", []))
    r.check("first rotation makes active + next", rc == 0 and states == ["active", "next"])
    rc, out, _ = cli.run("admin", "keys", "rotate", "--tenant", "acme", env=env)
    states = sorted(k["state"] for k in (out or {}).get("keys", []))
    r.check("second rotation retires one", rc == 0 and states == ["active", "next", "retired"])
    rc, out, _ = cli.run("admin", "keys", "list", "--tenant", "acme")
    keys = (out or {}).get("keys", [])
    r.check("keys list shows public parts only",
            rc == 0 and len(keys) == 3 and all("d" not in k["public_jwk"] for k in keys) and
            "sealed" not in json.dumps(out))
    rc, out, _ = cli.run("admin", "keys", "list", "--tenant", "beta")
    r.check("T05 keys of acme are not beta's", rc == 0 and out["keys"] == [])
    rc, _, _ = cli.run("admin", "keys", "rotate", "--tenant", "acme", "--alg", "none", env=env)
    r.check("keys rotate --alg none exits 2", rc == 2)


def check_urls(r, cli):
    env = dict(cli.env)
    env.pop("TESSERA_PG_URL", None)
    rc, _, _ = cli.run("admin", "tenant", "list", env=env)
    r.check("unset TESSERA_PG_URL exits 2", rc == 2)
    rc, _, _ = cli.run("migrate", env=env)
    r.check("migrate with unset TESSERA_PG_URL exits 2", rc == 2)
    env["TESSERA_PG_URL"] = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    rc, _, err = cli.run("admin", "tenant", "list", env=env)
    r.check("unreachable TESSERA_PG_URL exits 1", rc == 1 and "cannot connect" in err, err)
    env["TESSERA_PG_URL"] = "this is not a url"
    rc, _, _ = cli.run("admin", "tenant", "list", env=env)
    r.check("malformed TESSERA_PG_URL exits 1", rc == 1)


def main():
    server = os.environ.get("TESSERA_TEST_PG_URL")
    if not server:
        print("TESSERA_TEST_PG_URL unset: skipping")
        sys.exit(77)
    r = Results("tessera migrate and tessera admin")
    name = "tessera_cli_%d" % os.getpid()
    psql(server, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
    psql(server, "CREATE DATABASE %s" % name)
    env = dict(os.environ, TESSERA_PG_URL=url_with_db(server, name))
    env.pop("TESSERA_MASTER_KEY_FILE", None)
    cli = Cli(env)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            r.run("migrate", check_migrate, r, cli)
            r.run("tenants", check_tenants, r, cli)
            r.run("clients", check_clients, r, cli)
            r.run("users", check_users, r, cli)
            r.run("keys", check_keys, r, cli, tmp)
            r.run("urls", check_urls, r, cli)
        secrets = re.findall(r'"client_secret":"([^"]+)"', cli.stdout_all)
        r.check("each client secret printed exactly once",
                secrets and all(cli.stdout_all.count(s) == 1 for s in secrets))
        r.check("the password is never printed",
                PASSWORD not in cli.stdout_all and PASSWORD not in cli.stderr_all)
        r.check("no secret on stderr", all(s not in cli.stderr_all for s in secrets))
        r.check("no sanitizer report", "Sanitizer" not in cli.stderr_all and
                "runtime error" not in cli.stderr_all)
    finally:
        psql(server, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
    r.finish()


if __name__ == "__main__":
    main()
