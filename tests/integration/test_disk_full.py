#!/usr/bin/env python3
"""Postgres out of disk space under a running instance (SECURITY F11; issues 5 and 6).

Starts its own Postgres cluster and moves the tables the endpoints write (sessions,
revocations, users, audit_log) into a tablespace on a small tmpfs, then fills the tmpfs with
a file: a write that needs a new page fails with SQLSTATE 53100 (disk full), as it would on a
full disk; reads, and the WAL on the main disk, are untouched. Then, with one instance
(two shards):
- revocations until one is refused: the refusal is 503 with Retry-After, and nothing of it
  happened: its token is still active on every shard (no revocation applied that did not
  commit); the tokens revoked before it are inactive;
- logins until one is refused: 503, and exactly the sessions of the 200s exist (no half-made
  session, no session without its audit row);
- meanwhile /verify and introspection of valid tokens answer 200 / active: the stateless path
  stays up;
- the file removed, without a restart: the refused revocation and a login succeed, and the
  batched audit events of the tokens issued meanwhile are written (none dropped).
Skips when Postgres is not installed or a tmpfs cannot be mounted (this needs root).
"""
import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse

from tessera_harness import Results, check_clean_exit, metric
from test_audit_batch import settle
from test_login import PASSWORD, TENANT, Env, basic, call, good_login, introspect, jbody, sh, verify

TMPFS_MB = 16            # the tablespace's filesystem: small, so the filler fills it at once
FILL_CHUNK = 1 << 20     # the filler is written in these until the filesystem refuses
WRITE_TABLES = ("sessions", "revocations", "users", "audit_log")
MAX_TRIES = 400          # writes tried before one must have needed a new page (rows are small,
                         # a page holds tens; every table's last page fills within this)
SHARD_POLLS = 8          # fresh connections per check: both shards with near certainty


def issue(port, client):
    form = urllib.parse.urlencode({"grant_type": "client_credentials"})
    status, _, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, form,
                           {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(client)})
    if status != 200:
        raise RuntimeError("token: %s %r" % (status, data))
    return jbody(data)["access_token"]


def revoke(port, client, token):
    status, headers, _ = call(port, "POST", "/t/%s/oauth2/revoke" % TENANT,
                              urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}),
                              {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(client)})
    return status, dict(headers)


def everywhere(env, port, token, active):
    """/verify and introspection on SHARD_POLLS fresh connections agree that token is active."""
    return all((verify(port, token)[0] == 200) == active and
               introspect(port, token, env.clients["svc"])[1].get("active") is active
               for _ in range(SHARD_POLLS))


class FullDisk:
    """A tmpfs holding a tablespace, and a filler file that can fill it and be removed."""

    def __init__(self, env, workdir):
        self.dir = os.path.join(workdir, "full")
        self.filler = os.path.join(self.dir, "filler")
        self.mounted = False
        os.makedirs(self.dir)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % TMPFS_MB, "tmpfs", self.dir],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            return
        self.mounted = True
        space = os.path.join(self.dir, "space")
        os.makedirs(space)
        shutil.chown(space, "postgres", "postgres")
        r = sh("tessera_pg_psql '%s' %d \"CREATE TABLESPACE full_disk LOCATION '%s'\" "
               "\"GRANT CREATE ON TABLESPACE full_disk TO tessera_t\"" % (env.pg.data, env.pg.port, space))
        if r.returncode != 0:
            raise RuntimeError("tablespace: " + r.stderr.decode())
        for table in WRITE_TABLES:
            env.sql("ALTER TABLE %s SET TABLESPACE full_disk" % table)

    def fill(self):
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (FILL_CHUNK, 4096):  # then the last few KiB, page by page
                try:
                    while os.write(fd, b"\0" * size) == size:
                        pass
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self):
        os.unlink(self.filler)

    def unmount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_f11(res, env, disk):
    svc, app = env.clients["svc"], env.clients["app"]
    for i in range(3):
        env.user("full%d" % i)
    srv = env.server()
    try:
        port = srv.port
        valid = issue(port, svc)
        _, _, session = good_login(env, port, "full0")
        user_token = session["access_token"]
        early = issue(port, svc)
        st_early, _ = revoke(port, svc, early)
        disk.fill()
        revoked, refused, answer = [], None, None
        for _ in range(MAX_TRIES):
            token = issue(port, svc)
            st, headers = revoke(port, svc, token)
            if st != 200:
                refused, answer = token, (st, headers.get("retry-after"))
                break
            revoked.append(token)
        res.check("F11: disk full, a revocation that needs a new page: 503 with Retry-After",
                  refused is not None and answer[0] == 503 and answer[1] is not None,
                  "%d revoked, then %r" % (len(revoked), answer))
        res.check("F11: ... nothing of it happened: the token is still active on every shard",
                  refused is not None and everywhere(env, port, refused, True))
        res.check("F11: ... the revocations that committed before it hold",
                  st_early == 200 and all(everywhere(env, port, t, False) for t in [early] + revoked[-3:]),
                  "%s, %d revoked on the full disk" % (st_early, len(revoked)))
        before = int(env.sql("SELECT count(*) FROM sessions"))
        logins = []
        for _ in range(MAX_TRIES):
            st = good_login(env, port, "full1")[0]
            logins.append(st)
            if st != 200:
                break
        ok = logins.count(200)
        made = int(env.sql("SELECT count(*) FROM sessions")) - before
        audited = int(env.sql("SELECT count(*) FROM audit_log a JOIN sessions s ON s.id::text = a.target_id "
                              "WHERE a.action = 'login_succeeded' AND s.user_id = (SELECT id FROM users "
                              "WHERE username = 'full1')"))
        res.check("F11: disk full, a login that needs a new page: 503", logins[-1] == 503,
                  "%d logins, then %s" % (ok, logins[-1]))
        res.check("F11: ... exactly the sessions of the 200s exist, each with its audit row",
                  made == ok and audited == ok, "%d answered 200, %d sessions, %d audited" % (ok, made, audited))
        res.check("F11: ... /verify and introspection of valid tokens still answer",
                  everywhere(env, port, valid, True) and everywhere(env, port, user_token, True))
        disk.free()
        st, _ = revoke(port, svc, refused) if refused else (None, None)
        res.check("F11: space back, no restart: the refused revocation succeeds and holds",
                  st == 200 and everywhere(env, port, refused, False), repr(st))
        res.check("F11: ... and a login succeeds", good_login(env, port, "full2")[0] == 200)
        res.check("F11: ... the audit events of the tokens issued meanwhile are written, none dropped",
                  settle(port) and metric(port, 'tessera_audit_events_total{outcome="dropped"}') == 0)
        check_clean_exit(res, srv)
    finally:
        srv.kill()


def main():
    res = Results("Postgres disk full (F11)")
    if sh("tessera_pg_bindir").returncode != 0:
        print("SKIP: Postgres is not installed")
        raise SystemExit(77)
    with tempfile.TemporaryDirectory() as workdir:
        env = Env(workdir)
        disk = None
        try:
            env.prepare()
            disk = FullDisk(env, workdir)
            if not disk.mounted:
                print("SKIP: cannot mount a tmpfs here (needs root)")
                raise SystemExit(77)
            res.run("F11", test_f11, res, env, disk)
        finally:
            env.stop()
            if disk is not None:
                disk.unmount()
    res.finish()


if __name__ == "__main__":
    main()
