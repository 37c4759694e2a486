#!/usr/bin/env python3
"""Tessera with a real client (curl): keep-alive reuse, chunked upload, Expect: 100-continue,
HEAD, problem+json errors, X-Request-Id (H28), /metrics, configuration errors and --help.

The access line's "forwarded" member (X-Forwarded-For/-Proto/-Host/-Method/-Uri, sent raw on
a socket to GET /health/live, each line found by its X-Request-Id):
- all five headers: exactly those five members, in that order, with the values sent; only
  X-Forwarded-For: {"for": ...}; none: no "forwarded" member;
- a 1000-byte X-Forwarded-Host: its first 256 bytes kept;
- X-Forwarded-Uri "/a/b?token=SECRET2": "/a/b", "?code=SECRET2": "", and SECRET2 nowhere in
  the server's stderr;
- values with HTAB, '"', '\\' and UTF-8 bytes: the line is JSON and the decoded values are the
  bytes sent (the other control bytes, 0x01, 0x1b and 0x7f, are refused by the parser: 400);
- five values of 256 '"' each (514 bytes escaped each): the line is JSON, at most 2048 bytes,
  without "truncated", and keeps fewer than five members, the first ones in order;
- a 1750-byte path with the five headers: the same (the members that do not fit left out);
- every access line the server wrote parses as JSON.
"""

import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_harness as th  # noqa: E402

CURL = ["curl", "--silent", "--show-error", "--max-time", "20", "--noproxy", "*"]
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def curl(*args, timeout=30):
    return th.run_cmd(CURL + list(args), timeout=timeout)


def url(port, path):
    return "http://127.0.0.1:%d%s" % (port, path)


def parse_head(text):
    """Status and lowercase headers of the last response in `curl -i`/`-D -` output."""
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.startswith("HTTP/")]
    if not blocks:
        return None, {}
    lines = blocks[-1].split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def check_keepalive(res, port):
    out = curl("-v", "-o", "/dev/null", "-o", "/dev/null",
               url(port, "/health/live"), url(port, "/health/ready"))
    err = out.stderr.decode(errors="replace")
    res.check("curl keep-alive: second URL re-uses the connection",
              out.returncode == 0 and "Re-using existing connection" in err and
              err.count("HTTP/1.1 200") == 2, "rc %d stderr tail %r" % (out.returncode,
                                                                      err[-400:]))


def check_chunked_upload(res, port):
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(os.urandom(20000))
        f.flush()
        out = curl("-i", "-X", "POST", "-H", "Transfer-Encoding: chunked",
                   "--data-binary", "@" + f.name, url(port, "/health/live"))
    text = out.stdout.decode(errors="replace")
    status, headers = parse_head(text)
    res.check("curl chunked upload of 20 KB to /health/live -> 405 with Allow",
              out.returncode == 0 and status == 405 and "GET" in headers.get("allow", ""),
              "rc %d status %r headers %r" % (out.returncode, status, headers))
    out = curl("-o", "/dev/null", "-w", "%{http_code}", url(port, "/health/live"))
    res.check("server healthy after the chunked upload", out.stdout == b"200", repr(out.stdout))


def check_expect_continue(res, port):
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(b"e" * 10240)
        f.flush()
        out = curl("-v", "-i", "-X", "POST", "-H", "Expect: 100-continue",
                   "--expect100-timeout", "10", "--data-binary", "@" + f.name,
                   url(port, "/health/live"))
    text = out.stdout.decode(errors="replace")
    status, _ = parse_head(text)
    res.check("curl Expect: 100-continue with 10 KB body -> 100 Continue then 405",
              out.returncode == 0 and "HTTP/1.1 100 Continue" in text and status == 405,
              "rc %d out %r" % (out.returncode, text[:300]))


def check_head(res, port):
    out = curl("-I", url(port, "/health/live"))
    status, headers = parse_head(out.stdout.decode(errors="replace"))
    res.check("HEAD /health/live -> 200, Content-Length 15 as GET, no body",
              status == 200 and headers.get("content-length") == "15" and
              out.stdout.decode().endswith("\r\n\r\n"), repr(out.stdout[-200:]))
    # raw: HEAD then GET pipelined; a body after HEAD would break the framing of the GET
    sock = th.connect(port)
    try:
        sock.sendall(b"HEAD /health/live HTTP/1.1\r\nHost: a\r\n\r\n" + th.get("/health/live"))
        reader = th.Reader(sock)
        a = reader.read_response(head_only=True)
        b = reader.read_response()
        res.check("HEAD then GET pipelined: HEAD has no body, GET follows intact",
                  a is not None and a.status == 200 and b is not None and b.status == 200 and
                  b.body == b'{"status":"ok"}', "got %r, %r" % (a, b))
    finally:
        sock.close()
    out = curl("-I", url(port, "/metrics"))
    status, _ = parse_head(out.stdout.decode(errors="replace"))
    res.check("HEAD /metrics -> 200", status == 200, repr(out.stdout[:200]))


def check_problem(res, port, method, path, status_want):
    out = curl("-i", "-X", method, url(port, path))
    text = out.stdout.decode(errors="replace")
    status, headers = parse_head(text)
    body = text.replace("\r\n", "\n").split("\n\n", 1)[1] if "\n\n" in text.replace(
        "\r\n", "\n") else ""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    ok = (status == status_want and
          headers.get("content-type", "").startswith("application/problem+json") and
          isinstance(doc, dict) and doc.get("status") == status_want and
          isinstance(doc.get("type"), str) and isinstance(doc.get("title"), str) and
          isinstance(doc.get("detail"), str))
    if status_want == 405:
        allow = [m.strip() for m in headers.get("allow", "").split(",")]
        ok = ok and "GET" in allow and "HEAD" in allow
    res.check("%s %s -> %d problem+json (type, title, status, detail)%s" % (
        method, path, status_want, " + Allow" if status_want == 405 else ""), ok,
        "status %r headers %r body %r" % (status, headers, body[:200]))


def check_request_id(res, port):
    def rid(*extra):
        out = curl("-D", "-", "-o", "/dev/null", *extra, url(port, "/health/live"))
        return parse_head(out.stdout.decode(errors="replace"))[1].get("x-request-id")

    got = rid("-H", "X-Request-Id: client-id-42")
    res.check("H28 X-Request-Id from the client echoed", got == "client-id-42", repr(got))
    got = rid()
    res.check("X-Request-Id generated (32 hex) when absent", bool(got and HEX32.match(got)),
              repr(got))
    got = rid("-H", "X-Request-Id: " + "k" * 1024)
    res.check("H28 1 KiB X-Request-Id -> generated id", bool(got and HEX32.match(got)),
              repr(got and got[:80]))
    got = rid("-H", "X-Request-Id: bad\x7fid")
    res.check("H28 X-Request-Id with a control byte -> not echoed",
              got is None or (HEX32.match(got) is not None), repr(got))
    got = rid("-H", "X-Request-Id: caf\xe9")
    res.check("H28 X-Request-Id with non-ASCII -> generated id", bool(got and HEX32.match(got)),
              repr(got))
    ids = {rid() for _ in range(5)}
    res.check("generated X-Request-Ids are distinct", len(ids) == 5, repr(ids))


METRIC_LINE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*,?\})? '
    r'(-?[0-9.eE+-]+|NaN|[+-]Inf)( -?[0-9]+)?$')


def scrape(port):
    out = curl("-D", "-", url(port, "/metrics"))
    text = out.stdout.decode(errors="replace")
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    return parse_head(head + "\n\n")[1], body


def sample(body, name, **labels):
    total = None
    for line in body.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)', line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"', m.group(2) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total = (total or 0) + float(m.group(3))
    return total


def check_metrics(res, port):
    headers, body = scrape(port)
    bad = [line for line in body.splitlines()
           if line and not line.startswith("#") and not METRIC_LINE.match(line)]
    res.check("/metrics is Prometheus text (text/plain; every sample line well formed)",
              headers.get("content-type", "").startswith("text/plain") and body and not bad,
              "content-type %r bad lines %r" % (headers.get("content-type"), bad[:5]))
    comments_ok = all(re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line)
                      for line in body.splitlines() if line.startswith("#"))
    res.check("/metrics HELP/TYPE lines well formed", comments_ok, "")
    before_ok = sample(body, "tessera_http_requests_total", status="200") or 0
    before_404 = sample(body, "tessera_http_requests_total", status="404") or 0
    before_hist = sample(body, "tessera_http_request_duration_seconds_count") or 0
    for _ in range(3):
        curl("-o", "/dev/null", url(port, "/health/live"))
    for _ in range(2):
        curl("-o", "/dev/null", url(port, "/no/such/thing"))
    _, body = scrape(port)
    after_ok = sample(body, "tessera_http_requests_total", status="200") or 0
    after_404 = sample(body, "tessera_http_requests_total", status="404") or 0
    after_hist = sample(body, "tessera_http_request_duration_seconds_count") or 0
    res.check("/metrics requests_total{status=200} grows by >= 3 (%g -> %g)" % (
        before_ok, after_ok), after_ok - before_ok >= 3, "")
    res.check("/metrics requests_total{status=404} grows by 2 (%g -> %g)" % (
        before_404, after_404), after_404 - before_404 == 2, "")
    res.check("/metrics duration histogram count grows by >= 5 (%g -> %g)" % (
        before_hist, after_hist), after_hist - before_hist >= 5, "")
    inf = sample(body, "tessera_http_request_duration_seconds_bucket", le="+Inf")
    res.check("/metrics histogram +Inf bucket equals _count", inf == after_hist,
              "%r vs %r" % (inf, after_hist))
    live = [line for line in body.splitlines()
            if line.startswith("tessera_http_requests_total{") and "route=" in line]
    res.check("/metrics requests_total carries route and status labels", bool(live) and all(
        "status=" in line for line in live), repr(live[:3]))
    shards = re.findall(r'^tessera_connections_open\{shard="(\d+)"\} (\d+)', body, re.M)
    res.check("/metrics tessera_connections_open per shard (2 shards, scrape counted)",
              sorted(s for s, _ in shards) == ["0", "1"] and
              sum(int(v) for _, v in shards) >= 1, repr(shards))


def check_config_errors(res):
    bad = [("TESSERA_SHARDS", "zero"), ("TESSERA_LISTEN", "not-an-address"),
           ("TESSERA_HEADER_TIMEOUT_MS", "-5"), ("TESSERA_MAX_BODY_BYTES", "12abc"),
           ("TESSERA_ACCESS_LOG", "maybe"), ("TESSERA_LOG_LEVEL", "loud"),
           ("TESSERA_IDLE_TIMEOUT_MS", "99999999999999999999999"),
           ("TESSERA_TLS_CERT_FILE", "/nonexistent/cert.pem")]
    for var, value in bad:
        env = dict(os.environ)
        env.update(th.BASE_ENV)
        env[var] = value
        if var == "TESSERA_TLS_CERT_FILE":
            env["TESSERA_TLS_KEY_FILE"] = "/nonexistent/key.pem"
        try:
            out = th.run_cmd([th.tessera_bin(), "serve"], timeout=20, env=env)
            rc, err = out.returncode, out.stderr.decode(errors="replace")
        except Exception as exc:  # a server that started serving: kill it via the timeout
            rc, err = None, str(exc)
        lines = [line for line in err.splitlines() if line.strip()]
        res.check("config %s=%r -> exit 2, stderr names it" % (var, value),
                  rc == 2 and var in err and len(lines) <= 3,
                  "rc %r stderr %r" % (rc, err[:300]))
    env = dict(os.environ)
    env.update(th.BASE_ENV)
    env["TESSERA_TLS_CERT_FILE"] = "/dev/null"
    env.pop("TESSERA_TLS_KEY_FILE", None)
    out = th.run_cmd([th.tessera_bin(), "serve"], timeout=20, env=env)
    res.check("config TLS cert without key -> exit 2 naming TESSERA_TLS_KEY_FILE",
              out.returncode == 2 and b"TESSERA_TLS_KEY_FILE" in out.stderr,
              "rc %r stderr %r" % (out.returncode, out.stderr[:300]))


def check_help(res):
    for args in (["--help"], ["serve", "--help"]):
        out = th.run_cmd([th.tessera_bin()] + args, timeout=20)
        text = (out.stdout + out.stderr).decode(errors="replace")
        res.check("tessera %s -> exit 0 with usage" % " ".join(args),
                  out.returncode == 0 and "usage" in text.lower(), "rc %r" % out.returncode)
    out = th.run_cmd([th.tessera_bin(), "serve", "--help"], timeout=20)
    text = (out.stdout + out.stderr).decode(errors="replace")
    missing = [v for v in ("TESSERA_LISTEN", "TESSERA_SHARDS", "TESSERA_TLS_CERT_FILE",
                           "TESSERA_HEADER_TIMEOUT_MS", "TESSERA_MAX_BODY_BYTES") if v not in text]
    res.check("tessera serve --help lists the environment", not missing, repr(missing))
    out = th.run_cmd([th.tessera_bin(), "frobnicate"], timeout=20)
    res.check("tessera frobnicate (unknown command) -> exit 2", out.returncode == 2,
              "rc %r" % out.returncode)


FORWARDED = (("X-Forwarded-For", "for"), ("X-Forwarded-Proto", "proto"),
             ("X-Forwarded-Host", "host"), ("X-Forwarded-Method", "method"),
             ("X-Forwarded-Uri", "uri"))
FORWARDED_LOG_MAX = 256   # HTTP_FORWARDED_LOG_MAX: bytes of each value the line keeps
LOG_LINE_BYTES_MAX = 2048
ACCESS_WAIT_S = 10.0      # a shard writes its buffered lines within a loop turn


def access_lines(srv):
    return [line for line in srv.stderr_text().splitlines() if '"msg":"access"' in line]


def access_line(srv, rid):
    """The access line of the request sent with X-Request-Id rid: (raw line, parsed or None)."""
    mark = '"request_id":"%s"' % rid
    deadline = time.monotonic() + ACCESS_WAIT_S
    while True:
        found = [line for line in access_lines(srv) if mark in line]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if not found:
        return None, None
    try:
        return found[0], json.loads(found[0])
    except ValueError:
        return found[0], None


def send_forwarded(port, rid, headers, path=b"/health/live"):
    """GET path with X-Request-Id rid and the (name, bytes value) headers, raw on a socket."""
    raw = (b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nX-Request-Id: " + rid.encode() +
           b"\r\nConnection: close\r\n")
    for name, value in headers:
        raw += name.encode() + b": " + value + b"\r\n"
    resp, _, sock = th.exchange(port, raw + b"\r\n")
    sock.close()
    return resp.status if resp is not None else None


def forwarded_case(res, srv, name, rid, headers, want_status=200, path=b"/health/live"):
    """Sends the request; checks its status and that its access line is JSON; returns the
    parsed line (or None)."""
    status = send_forwarded(srv.port, rid, headers, path)
    raw, doc = (None, None) if status != want_status else access_line(srv, rid)
    res.check("forwarded %s: %d, its access line found and JSON" % (name, want_status),
              status == want_status and isinstance(doc, dict),
              "status %r line %r" % (status, raw and raw[:300]))
    return doc


def check_forwarded(res, srv):
    plain = [(h, v) for (h, _), v in zip(FORWARDED, (b"203.0.113.9, 10.0.0.1", b"https",
                                                     b"shop.example", b"POST", b"/orders/42"))]
    doc = forwarded_case(res, srv, "all five", "fwd-all", plain)
    want = {"for": "203.0.113.9, 10.0.0.1", "proto": "https", "host": "shop.example",
            "method": "POST", "uri": "/orders/42"}
    got = (doc or {}).get("forwarded")
    res.check("forwarded: all five headers -> exactly those five members, in order, as sent",
              got == want and list(got) == [m for _, m in FORWARDED], repr(got))
    res.check("forwarded: the line's own method/path/status are the request's",
              doc is not None and doc.get("method") == "GET" and doc.get("path") == "/health/live" and
              doc.get("status") == 200, repr(doc))

    doc = forwarded_case(res, srv, "only For", "fwd-for", [("X-Forwarded-For", b"198.51.100.4")])
    got = (doc or {}).get("forwarded")
    res.check("forwarded: only X-Forwarded-For -> {\"for\": ...} alone", got == {"for": "198.51.100.4"},
              repr(got))

    doc = forwarded_case(res, srv, "none", "fwd-none", [])
    res.check("forwarded: no X-Forwarded-* header -> no \"forwarded\" member",
              doc is not None and "forwarded" not in doc, repr(doc))

    host = bytes(b"abcdefghijklmnopqrstuvwxyz0123456789."[i % 37] for i in range(1000))
    doc = forwarded_case(res, srv, "1000-byte host", "fwd-long", [("X-Forwarded-Host", host)])
    got = (doc or {}).get("forwarded")
    res.check("forwarded: a 1000-byte X-Forwarded-Host -> its first 256 bytes",
              got == {"host": host[:FORWARDED_LOG_MAX].decode()}, repr(got)[:400])

    doc = forwarded_case(res, srv, "uri with a query", "fwd-query",
                         [("X-Forwarded-Method", b"GET"), ("X-Forwarded-Uri", b"/a/b?token=SECRET2&x=1")])
    got = (doc or {}).get("forwarded")
    res.check("forwarded: X-Forwarded-Uri /a/b?token=SECRET2 -> \"/a/b\" (the query dropped)",
              got == {"method": "GET", "uri": "/a/b"}, repr(got))
    doc = forwarded_case(res, srv, "uri that is only a query", "fwd-qonly",
                         [("X-Forwarded-Uri", b"?code=SECRET2")])
    got = (doc or {}).get("forwarded")
    res.check("forwarded: X-Forwarded-Uri ?code=SECRET2 -> \"\"", got == {"uri": ""}, repr(got))
    res.check("forwarded: SECRET2 nowhere in the server's stderr", "SECRET2" not in srv.stderr_text(), "")

    # The parser refuses every control byte but HTAB in a field value (H10), so those never
    # reach the line; HTAB, quote, backslash and UTF-8 (copied as it is) do.
    for byte in (b"\x01", b"\x1b", b"\x7f"):
        status = send_forwarded(srv.port, "fwd-ctl-%02x" % byte[0], [("X-Forwarded-Host", b"a" + byte + b"b")])
        res.check("forwarded: X-Forwarded-Host with byte 0x%02x -> 400 (the parser refuses it)" % byte[0],
                  status == 400, repr(status))
    odd = [(h, v) for (h, _), v in zip(FORWARDED, (b'a"b', b"x\\y", b'h\tq"\\\\', b"caf\xc3\xa9 \"q\"",
                                                   b'/p\t"\\/x\\u0041'))]
    doc = forwarded_case(res, srv, "escaped values", "fwd-esc", odd)
    got = (doc or {}).get("forwarded")
    want = {m: v.decode() for (_, m), (_, v) in zip(FORWARDED, odd)}
    res.check("forwarded: values with HTAB, '\"', '\\\\', UTF-8 -> JSON, decoded as sent",
              got == want, "got %r want %r" % (got, want))
    raw = [line for line in access_lines(srv) if '"request_id":"fwd-esc"' in line]
    res.check("forwarded: HTAB written as \\t, no raw control byte in the line",
              bool(raw) and "\\t" in raw[0] and not re.search(r"[\x00-\x1f\x7f]", raw[0]), repr(raw[:1]))

    def fill_check(name, doc, rid, sent):
        got = (doc or {}).get("forwarded") or {}
        raw = [line for line in access_lines(srv) if '"request_id":"%s"' % rid in line]
        size = len(raw[0].encode()) + 1 if raw else None  # with its newline
        members = [m for _, m in FORWARDED]
        res.check("forwarded %s: no \"truncated\", the line <= %d bytes" % (name, LOG_LINE_BYTES_MAX),
                  doc is not None and "truncated" not in doc and size is not None and size <= LOG_LINE_BYTES_MAX,
                  "size %r doc %r" % (size, doc and sorted(doc)))
        res.check("forwarded %s: fewer than five members, the first ones in order, whole" % name,
                  len(got) < 5 and list(got) == members[:len(got)] and all(v == sent[m] for m, v in got.items()),
                  "members %r" % list(got))
        return got

    quotes = b'"' * FORWARDED_LOG_MAX   # 514 bytes escaped, with its quotes
    five = [(h, quotes) for h, _ in FORWARDED]
    doc = forwarded_case(res, srv, "five values of 256 '\"'", "fwd-fill", five)
    got = fill_check("five values of 256 '\"'", doc, "fwd-fill", {m: '"' * FORWARDED_LOG_MAX for _, m in FORWARDED})
    res.check("forwarded five values of 256 '\"': the first member still kept", len(got) >= 1, repr(list(got)))

    doc = forwarded_case(res, srv, "1750-byte path", "fwd-path", plain[:1] + five[1:], want_status=404,
                         path=b"/" + b"p" * 1749)
    sent = {m: '"' * FORWARDED_LOG_MAX for _, m in FORWARDED}
    sent["for"] = "203.0.113.9, 10.0.0.1"
    fill_check("1750-byte path", doc, "fwd-path", sent)


def main():
    res = th.Results("HTTP with curl: keep-alive, chunked, 100-continue, errors, metrics")
    srv = th.Server(TESSERA_ACCESS_LOG="on")
    try:
        srv.start()
        port = srv.port
        res.run("keep-alive", check_keepalive, res, port)
        res.run("chunked upload", check_chunked_upload, res, port)
        res.run("expect 100-continue", check_expect_continue, res, port)
        res.run("HEAD", check_head, res, port)
        res.run("404", check_problem, res, port, "GET", "/no/such/thing", 404)
        res.run("405", check_problem, res, port, "DELETE", "/health/live", 405)
        res.run("405 POST metrics", check_problem, res, port, "POST", "/metrics", 405)
        res.run("X-Request-Id", check_request_id, res, port)
        res.run("metrics", check_metrics, res, port)
        res.run("forwarded", check_forwarded, res, srv)
        access = [line for line in srv.stderr_text().splitlines() if "client-id-42" in line]
        res.check("access log (TESSERA_ACCESS_LOG=on) is JSON and carries the request id",
                  bool(access) and all(json.loads(line) for line in access),
                  repr(access[:1]))
        th.check_clean_exit(res, srv)
        bad = []
        for line in access_lines(srv):
            try:
                json.loads(line)
            except ValueError:
                bad.append(line)
        res.check("every access line on stderr parses as JSON (%d lines)" % len(access_lines(srv)),
                  access_lines(srv) and not bad, repr(bad[:2]))
    finally:
        srv.kill()
    res.run("config errors", check_config_errors, res)
    res.run("help", check_help, res)
    res.finish()


if __name__ == "__main__":
    main()
