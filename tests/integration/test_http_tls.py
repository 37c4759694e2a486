#!/usr/bin/env python3
"""TLS listener end to end: handshake with openssl s_client (1.3, 1.2, 1.1 refused), ALPN
http/1.1, curl keep-alive over TLS, 100 pipelined requests over TLS, garbage instead of a
ClientHello."""

import os
import shutil
import socket
import ssl
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_harness as th  # noqa: E402

REQUEST = b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def make_cert(tmp):
    cert = os.path.join(tmp, "cert.pem")
    key = os.path.join(tmp, "key.pem")
    out = th.run_cmd(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                      "-subj", "/CN=localhost", "-days", "1",
                      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                      "-keyout", key, "-out", cert], timeout=60)
    if out.returncode != 0:
        raise RuntimeError("openssl req failed: %r" % out.stderr[-500:])
    return cert, key


def s_client(port, *flags, request=REQUEST):
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
            "-servername", "localhost", "-ign_eof"] + list(flags)
    try:
        out = th.run_cmd(args, timeout=20, input=request)
    except Exception as exc:
        return None, str(exc)
    return out.returncode, (out.stdout + out.stderr).decode(errors="replace")


def check_s_client(res, port, cert):
    rc, text = s_client(port, "-alpn", "http/1.1", "-tls1_3", "-CAfile", cert)
    res.check("TLS 1.3 via s_client: GET -> 200, ALPN http/1.1",
              "HTTP/1.1 200" in text and "ALPN protocol: http/1.1" in text and
              "TLSv1.3" in text and '{"status":"ok"}' in text,
              "rc %r output tail %r" % (rc, text[-600:]))
    res.check("TLS 1.3 certificate verifies against the self-signed CA",
              "Verify return code: 0 (ok)" in text, text[-300:])
    rc, text = s_client(port, "-alpn", "http/1.1", "-tls1_2")
    res.check("TLS 1.2 via s_client: GET -> 200, ALPN http/1.1",
              "HTTP/1.1 200" in text and "ALPN protocol: http/1.1" in text and
              "TLSv1.2" in text, "rc %r output tail %r" % (rc, text[-600:]))
    rc, text = s_client(port, "-tls1_3")
    res.check("TLS 1.3 without ALPN still serves HTTP/1.1", "HTTP/1.1 200" in text,
              "rc %r tail %r" % (rc, text[-400:]))
    # SECLEVEL=0 so that it is the server, not our client library, that refuses 1.1
    rc, text = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    client_refused = "no protocols available" in text
    res.check("TLS 1.1 refused by the server (no response, handshake fails)",
              rc is not None and rc != 0 and "HTTP/1.1" not in text and not client_refused,
              "rc %r tail %r" % (rc, text[-400:]))
    rc, text = s_client(port, "-alpn", "h2", "-tls1_3")
    res.check("ALPN offering only h2: never negotiates h2",
              "ALPN protocol: h2" not in text, "tail %r" % text[-400:])


def check_curl(res, port, cert):
    base = "https://localhost:%d" % port
    out = th.run_cmd(["curl", "-sS", "-v", "--max-time", "20", "--noproxy", "*",
                      "--cacert", cert, "--resolve", "localhost:%d:127.0.0.1" % port,
                      "-o", "/dev/null", "-o", "/dev/null",
                      base + "/health/live", base + "/health/ready"], timeout=30)
    err = out.stderr.decode(errors="replace")
    res.check("curl https with --cacert: 2 URLs over one TLS connection (keep-alive)",
              out.returncode == 0 and "Re-using existing connection" in err and
              err.count("HTTP/1.1 200") == 2 and "ALPN: server accepted http/1.1" in err,
              "rc %d tail %r" % (out.returncode, err[-500:]))
    out = th.run_cmd(["curl", "-sS", "--max-time", "20", "--noproxy", "*", "-o", "/dev/null",
                      "--resolve", "localhost:%d:127.0.0.1" % port, base + "/health/live"],
                     timeout=30)
    res.check("curl without the CA refuses the self-signed cert (sanity)",
              out.returncode != 0, "rc %d" % out.returncode)


def tls_connect(port, cert):
    ctx = ssl.create_default_context(cafile=cert)
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=15)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def check_pipeline(res, port, cert):
    sock = tls_connect(port, cert)
    try:
        res.check("python ssl: ALPN http/1.1 selected, TLS >= 1.2",
                  sock.selected_alpn_protocol() == "http/1.1" and
                  sock.version() in ("TLSv1.3", "TLSv1.2"),
                  "%r %r" % (sock.selected_alpn_protocol(), sock.version()))
        count = 100
        sock.sendall(b"".join(th.get("/health/live", host="localhost",
                                     extra="X-Request-Id: tls-%03d\r\n" % i)
                              for i in range(count)))
        reader = th.Reader(sock)
        ids = []
        for _ in range(count):
            resp = reader.read_response()
            if resp is None or resp.status != 200:
                break
            ids.append(resp.header("x-request-id"))
        res.check("100 pipelined requests over TLS -> 100 responses in order",
                  ids == ["tls-%03d" % i for i in range(count)], "got %d" % len(ids))
        # a body over TLS, then keep-alive
        sock.sendall(b"POST /health/live HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20000"
                     b"\r\n\r\n" + b"t" * 20000 + th.get("/health/live", host="localhost"))
        a = reader.read_response()
        b = reader.read_response()
        res.check("20 KB body over TLS then GET -> 405, 200", a is not None and a.status == 405
                  and b is not None and b.status == 200, "got %r, %r" % (a, b))
    finally:
        sock.close()


def check_garbage(res, port, cert):
    for label, junk in (("garbage bytes", os.urandom(512)),
                        ("plain HTTP", th.get("/health/live"))):
        sock = th.connect(port)
        try:
            sock.sendall(junk)
            reader = th.Reader(sock)
            closed, extra = reader.closed_within(5)
            res.check("%s instead of a ClientHello -> connection closed, no HTTP answer" % label,
                      closed and b"HTTP/1.1" not in extra, "closed %s bytes %r" % (
                          closed, extra[:60]))
        finally:
            sock.close()
    sock = tls_connect(port, cert)
    try:
        sock.sendall(th.get("/health/live", host="localhost"))
        resp = th.Reader(sock).read_response()
        res.check("server still serves TLS clients afterwards", resp is not None and
                  resp.status == 200, repr(resp))
    finally:
        sock.close()


def main():
    res = th.Results("TLS listener")
    if shutil.which("openssl") is None or shutil.which("curl") is None:
        print("openssl or curl missing")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="tessera-tls-")
    srv = None
    try:
        cert, key = make_cert(tmp)
        srv = th.Server(TESSERA_TLS_CERT_FILE=cert, TESSERA_TLS_KEY_FILE=key)
        srv.start()
        res.check("listening line says tls:true", '"tls":true' in srv.stderr_text(), "")
        res.run("s_client", check_s_client, res, srv.port, cert)
        res.run("curl", check_curl, res, srv.port, cert)
        res.run("pipeline", check_pipeline, res, srv.port, cert)
        res.run("garbage", check_garbage, res, srv.port, cert)
        th.check_clean_exit(res, srv)
    finally:
        if srv is not None:
            srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    res.finish()


if __name__ == "__main__":
    main()
