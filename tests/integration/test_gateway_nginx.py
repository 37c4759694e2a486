#!/usr/bin/env python3
"""nginx auth_request in front of an application, checked by Tessera's /verify (issue 5;
deploy/gateways/nginx.conf run as shipped, only its three addresses substituted).

One nginx process (no master, foreground), a tiny upstream (a Python http.server that echoes
the X-Auth-* headers it received) and Tessera (two shards, its own Postgres cluster):
- no token: 401 with Tessera's WWW-Authenticate; a garbage token: 401; neither reaches the
  upstream;
- a valid token: 200 (also for a POST: the check is made as a GET), the upstream receives X-Auth-Subject (the client id), X-Auth-Client,
  X-Auth-Scope, X-Auth-Tenant and X-Auth-Token-Id from Tessera, never the client's own
  (a client-sent X-Auth-Subject is replaced);
- /admin/ (?scope=admin in the subrequest): a token without the scope 403, with it 200;
- the token revoked (RFC 7009): 401 at once (J32: the cached verification is not reused);
- Tessera's access line for each /verify subrequest (found by the Host the client sent) carries
  "forwarded" with nginx's description of the client's request: for = $proxy_add_x_forwarded_for
  (ending with the client address 127.0.0.1, after the client's own X-Forwarded-For), proto
  "http", host = the Host nginx saw ($host), method = the client's (GET, POST, DELETE) and
  uri = its path without the query, for a 200, a 401 (no token) and a 403 (/admin/), with the
  request id nginx sent; the client's ?access_token=SECRETVALUE appears nowhere in Tessera's
  stderr; every /verify access line Tessera wrote during the run carries "forwarded";
- Tessera stopped: 500, the request refused, never let through.
Skips (77) when nginx lacks auth_request or Postgres is not installed.
"""
import base64
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

from tessera_harness import Results, Server, check_clean_exit, tessera_bin
from test_store_faults import Postgres, free_port, sh

SOURCE = os.environ.get("TESSERA_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
CONF = os.path.join(SOURCE, "deploy", "gateways", "nginx.conf")
TENANT = "acme"                       # the slug deploy/gateways/nginx.conf names
START_S = 10.0                        # nginx binds its port well within this
AUTH_HEADERS = ("x-auth-subject", "x-auth-client", "x-auth-scope", "x-auth-tenant", "x-auth-token-id")

WRAPPER = """\
# Written by tests/integration/test_gateway_nginx.py around deploy/gateways/nginx.conf.
worker_processes 1;
pid {dir}/nginx.pid;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp_body;
    proxy_temp_path {dir}/tmp_proxy;
    fastcgi_temp_path {dir}/tmp_fastcgi;
    uwsgi_temp_path {dir}/tmp_uwsgi;
    scgi_temp_path {dir}/tmp_scgi;
{body}
}}
"""


def nginx_has_auth_request():
    if not shutil.which("nginx"):
        return False
    r = subprocess.run(["nginx", "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    return b"with-http_auth_request_module" in r.stdout


# ---------------------------------------------------------------------------- the upstream

class Upstream:
    """Answers every request 200 with a JSON echo of the X-Auth-* headers it received."""

    def __init__(self):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                got = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-auth-")}
                seen.append((self.path, got))
                body = json.dumps({"path": self.path, "headers": got}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------- nginx

def substitute(text, old, new):
    if text.count(old) != 1:
        raise RuntimeError("deploy/gateways/nginx.conf: %r expected once, found %d" % (old, text.count(old)))
    return text.replace(old, new)


class Nginx:
    def __init__(self, workdir, tessera_port, upstream_port):
        self.dir = os.path.join(workdir, "nginx")
        os.makedirs(self.dir)
        self.port = free_port()
        with open(CONF) as f:
            body = f.read()
        body = substitute(body, "server 127.0.0.1:8080;", "server 127.0.0.1:%d;" % tessera_port)
        body = substitute(body, "server 127.0.0.1:9000;", "server 127.0.0.1:%d;" % upstream_port)
        body = substitute(body, "listen 127.0.0.1:8000;", "listen 127.0.0.1:%d;" % self.port)
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(WRAPPER.format(dir=self.dir, body=body))
        self.proc = None

    def start(self):
        err = os.path.join(self.dir, "error.log")
        self.stderr = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-e", err, "-c", self.conf,
                                      "-g", "daemon off; master_process off;"],
                                     stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start: %s" % self.log())

    def log(self):
        text = ""
        for name in ("stderr", "error.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += f.read()[-2000:]
            except OSError:
                pass
        return text

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "stderr", None):
            self.stderr.close()


# ---------------------------------------------------------------------------- requests

def call(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def client_form(client, **fields):
    pair = base64.b64encode(("%s:%s" % (client["client_id"], client["client_secret"])).encode()).decode()
    return urllib.parse.urlencode(fields), {"Authorization": "Basic " + pair,
                                            "Content-Type": "application/x-www-form-urlencoded"}


def token(port, client, scope):
    body, headers = client_form(client, grant_type="client_credentials", scope=scope)
    status, _, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, body, headers)
    if status != 200:
        raise RuntimeError("token request: %r %r" % (status, data[:300]))
    return json.loads(data)["access_token"]


def through(port, path, tok=None, extra=None, method="GET", body=None):
    headers = dict(extra or {})
    if tok is not None:
        headers["Authorization"] = "Bearer " + tok
    status, hdr, data = call(port, method, path, body, headers=headers)
    echo = None
    if status == 200:
        try:
            echo = json.loads(data)
        except ValueError:
            pass
    return status, hdr, echo


def wait_ready(port, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, _, body = call(port, "GET", "/health/ready")[:3]
            if status == 200 and json.loads(body).get("status") == "ready":
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------------- the checks

def test_gateway(res, ctx):
    ngx, up, svc = ctx["nginx"].port, ctx["upstream"], ctx["svc"]
    tport = ctx["tessera"].port
    status, hdr, _ = through(ngx, "/api/things")
    res.check("no token: 401 with Tessera's WWW-Authenticate Bearer",
              status == 401 and hdr.get("www-authenticate", "").startswith("Bearer"), "%r %r" % (status, hdr))
    status, _, _ = through(ngx, "/api/things", "not-a-token")
    res.check("a garbage token: 401", status == 401, repr(status))
    status, _, _ = through(ngx, "/api/things", None, {"X-Auth-Subject": "admin"})
    res.check("no token but a forged X-Auth-Subject: 401", status == 401, repr(status))
    res.check("nothing refused reached the upstream", not up.seen, repr(up.seen))

    read = token(tport, svc, "read")
    status, _, echo = through(ngx, "/api/things?x=1", read)
    got = (echo or {}).get("headers", {})
    cid = svc["client_id"]
    res.check("a valid token: 200 from the upstream", status == 200 and echo is not None, repr(status))
    res.check("the upstream got X-Auth-Subject and X-Auth-Client (the client id), X-Auth-Scope",
              got.get("x-auth-subject") == cid and got.get("x-auth-client") == cid and
              got.get("x-auth-scope") == "read", repr(got))
    res.check("the upstream got X-Auth-Tenant and X-Auth-Token-Id",
              bool(got.get("x-auth-tenant")) and bool(got.get("x-auth-token-id")), repr(got))
    res.check("the upstream got the original path", (echo or {}).get("path") == "/api/things?x=1", repr(echo))
    status, _, echo = through(ngx, "/api/things", read, {"X-Auth-Subject": "admin", "X-Auth-Scope": "admin"})
    got = (echo or {}).get("headers", {})
    res.check("a client's own X-Auth-Subject/X-Auth-Scope are replaced by Tessera's",
              status == 200 and got.get("x-auth-subject") == cid and got.get("x-auth-scope") == "read",
              "%r %r" % (status, got))

    status, _, echo = through(ngx, "/api/things", read, {"Content-Type": "application/json"}, "POST",
                              b'{"a": 1}')
    got = (echo or {}).get("headers", {})
    res.check("a POST with a valid token: 200, the check made as a GET without the body",
              status == 200 and got.get("x-auth-subject") == cid, "%r %r" % (status, got))
    status, _, _ = through(ngx, "/api/things", None, None, "DELETE")
    res.check("a DELETE without a token: 401", status == 401, repr(status))

    status, hdr, _ = through(ngx, "/admin/users", read)
    res.check("/admin/ (?scope=admin) with a token lacking the scope: 403", status == 403, "%r %r" % (status, hdr))
    admin = token(tport, svc, "read admin")
    status, _, echo = through(ngx, "/admin/users", admin)
    got = (echo or {}).get("headers", {})
    res.check("/admin/ with the scope: 200, X-Auth-Scope passed on",
              status == 200 and got.get("x-auth-scope") == "read admin", "%r %r" % (status, got))

    before = len(up.seen)
    body, headers = client_form(svc, token=read)
    rst, _, _ = call(tport, "POST", "/t/%s/oauth2/revoke" % TENANT, body, headers)
    res.check("revocation at Tessera: 200", rst == 200, repr(rst))
    codes = [through(ngx, "/api/things", read)[0] for _ in range(6)]
    res.check("J32: the revoked token through nginx: 401 at once, every time", codes == [401] * 6, repr(codes))
    res.check("... and it did not reach the upstream", len(up.seen) == before, repr(up.seen[before:]))
    status, _, _ = through(ngx, "/api/things", admin)
    res.check("another valid token still passes", status == 200, repr(status))


VERIFY_PATH = '"path":"/t/%s/verify"' % TENANT
ACCESS_WAIT_S = 10.0      # a shard writes its buffered lines within a loop turn
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def verify_lines(srv):
    """Tessera's access lines for /verify, parsed (None for a line that is not JSON)."""
    out = []
    for line in srv.stderr_text().splitlines():
        if '"msg":"access"' in line and VERIFY_PATH in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append(None)
    return out


def verify_line_for(srv, host):
    """The /verify access line whose forwarded.host is host (unique per request here)."""
    deadline = time.monotonic() + ACCESS_WAIT_S
    while True:
        found = [d for d in verify_lines(srv) if d and (d.get("forwarded") or {}).get("host") == host]
        if found or time.monotonic() > deadline:
            return found[0] if len(found) == 1 else None
        time.sleep(0.02)


def test_forwarded(res, ctx):
    ngx, srv, svc = ctx["nginx"].port, ctx["tessera"], ctx["svc"]
    read = token(srv.port, svc, "read")
    target = "/orders/42?access_token=SECRETVALUE&x=1"
    members = ["for", "proto", "host", "method", "uri"]
    cases = [  # what the client sends; the status; forwarded.for; the uri Tessera should log
        ("get.orders.example", "GET", target, read, None, 200, "127.0.0.1", "/orders/42"),
        ("post.orders.example", "POST", target, read, "192.0.2.7", 200, "192.0.2.7, 127.0.0.1", "/orders/42"),
        ("anon.orders.example", "GET", target, None, None, 401, "127.0.0.1", "/orders/42"),
        ("delete.orders.example", "DELETE", target, None, None, 401, "127.0.0.1", "/orders/42"),
        ("admin.orders.example", "GET", "/admin/users?code=SECRETVALUE", read, None, 403, "127.0.0.1",
         "/admin/users"),
    ]
    for host, method, path, tok, xff, want_status, want_for, want_uri in cases:
        extra = {"Host": host}
        if xff is not None:
            extra["X-Forwarded-For"] = xff
        body = b'{"a": 1}' if method == "POST" else None
        status, _, _ = through(ngx, path, tok, extra, method, body)
        what = "%s %s (%s token) via nginx" % (method, path.split("?")[0], "a" if tok else "no")
        res.check("%s: %d" % (what, want_status), status == want_status, repr(status))
        doc = verify_line_for(srv, host)
        fwd = (doc or {}).get("forwarded") or {}
        res.check("%s: one /verify access line with forwarded.host %r, status %d, nginx's request id" % (
                  what, host, want_status),
                  doc is not None and doc.get("status") == want_status and doc.get("method") == "GET" and
                  bool(HEX32.match(str(doc.get("request_id")))), repr(doc))
        res.check("%s: forwarded = for, proto http, host, method %s, uri %r (no query), in that order" % (
                  what, method, want_uri),
                  list(fwd) == members and fwd.get("proto") == "http" and fwd.get("method") == method and
                  fwd.get("uri") == want_uri, repr(fwd))
        res.check("%s: forwarded.for %r, ending with the client address 127.0.0.1" % (what, want_for),
                  fwd.get("for") == want_for and fwd.get("for", "").endswith("127.0.0.1"), repr(fwd.get("for")))
    res.check("SECRETVALUE (the client's query) nowhere in Tessera's stderr",
              "SECRETVALUE" not in srv.stderr_text(), "")
    lines = verify_lines(srv)
    bare = [d for d in lines if not d or "forwarded" not in d]
    # Also the first check a shard makes with a token: it parks while the tenant's keys load,
    # and its line is written when the answer is resumed.
    res.check("every /verify access line of the run (%d) is JSON and carries forwarded, a parked "
              "check's too" % len(lines), lines and not bare, "%d without: %r" % (len(bare), bare[:3]))


def test_tessera_away(res, ctx):
    up = ctx["upstream"]
    tok = token(ctx["tessera"].port, ctx["svc"], "read")
    check_clean_exit(res, ctx["tessera"], "Tessera exits 0 on SIGTERM, no sanitizer report")
    before = len(up.seen)
    status, _, _ = through(ctx["nginx"].port, "/api/things", tok)
    res.check("Tessera stopped: nginx refuses (500), fails closed", status == 500, repr(status))
    res.check("... and nothing reached the upstream", len(up.seen) == before)


def main():
    res = Results("nginx auth_request in front of Tessera's /verify")
    if not nginx_has_auth_request():
        print("SKIP: nginx with the auth_request module is not installed (Debian package nginx)")
        raise SystemExit(77)
    if sh("tessera_pg_bindir").returncode != 0:
        print("SKIP: Postgres is not installed")
        raise SystemExit(77)
    with tempfile.TemporaryDirectory() as workdir:
        pg = Postgres(workdir)
        ctx = {}
        try:
            key = os.path.join(workdir, "master.key")
            with open(key, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
            os.chmod(key, 0o600)
            pg.init()
            env = dict(os.environ, TESSERA_PG_URL=pg.url, TESSERA_MASTER_KEY_FILE=key)
            for args in (["migrate"], ["admin", "tenant", "create", TENANT],
                         ["admin", "keys", "rotate", "--tenant", TENANT]):
                subprocess.run([tessera_bin()] + args, env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)
            out = subprocess.run([tessera_bin(), "admin", "client", "create", "--tenant", TENANT, "--name", "svc",
                                  "--grant", "client_credentials", "--scope", "read admin"],
                                 env=env, check=True, stdout=subprocess.PIPE, timeout=60).stdout
            ctx["svc"] = json.loads(out)
            ctx["tessera"] = Server(TESSERA_SHARDS=2, TESSERA_PG_URL=pg.url, TESSERA_MASTER_KEY_FILE=key,
                                    TESSERA_ACCESS_LOG="on").start()
            res.check("Tessera ready", wait_ready(ctx["tessera"].port))
            ctx["upstream"] = Upstream().start()
            ctx["nginx"] = Nginx(workdir, ctx["tessera"].port, ctx["upstream"].port).start()
            res.run("gateway", test_gateway, res, ctx)
            res.run("forwarded", test_forwarded, res, ctx)
            res.run("tessera away", test_tessera_away, res, ctx)
            log = ctx["nginx"].log()
            res.check("nginx logged no [emerg]/[alert]/[crit]", not re.search(r"\[(emerg|alert|crit)\]", log), log)
        finally:
            if "nginx" in ctx:
                ctx["nginx"].stop()
            if "upstream" in ctx:
                ctx["upstream"].stop()
            if "tessera" in ctx:
                ctx["tessera"].kill()
            pg.stop("fast")
    res.finish()


if __name__ == "__main__":
    main()
