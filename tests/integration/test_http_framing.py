#!/usr/bin/env python3
"""End-to-end request framing over raw sockets: SECURITY.md H01-H24, H27-H29.

Each malformed request goes on its own connection; a framing error must be answered with
the listed status, carry "Connection: close", and the server must then close (EOF) without
answering anything more. Requests the table says are acceptable must be answered normally.
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_harness as th  # noqa: E402

H = "Host: a\r\n"
# After a framing error the server half-closes at once; it drains for up to 2 s, but our
# read side sees EOF as soon as the response is written. Generous for a sanitizer build.
CLOSE_WAIT_S = 4.0


def req(head, body=b""):
    raw = head.encode("latin-1") if isinstance(head, str) else head
    return raw + body


def post(headers, body=b""):
    return req("POST /health/live HTTP/1.1\r\n" + H + headers + "\r\n", body)


CASES = [
    # (id, label, raw bytes, acceptable statuses, must close)
    ("H01", "CL and TE chunked",
     post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), {400}, True),
    ("H01", "TE chunked then CL",
     post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), {400}, True),
    ("H02", "two differing CL", post("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
     {400}, True),
    ("H02", "CL list 5, 6", post("Content-Length: 5, 6\r\n", b"hello!"), {400}, True),
    ("H03", "identical CL twice", post("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
     {400}, True),
    ("H03", "CL list 5, 5", post("Content-Length: 5, 5\r\n", b"hello"), {400}, True),
    ("H04", "CL +5", post("Content-Length: +5\r\n", b"hello"), {400}, True),
    ("H04", "CL -1", post("Content-Length: -1\r\n", b"hello"), {400}, True),
    ("H04", "CL 0x10", post("Content-Length: 0x10\r\n", b"hello"), {400}, True),
    ("H04", "CL '5 5'", post("Content-Length: 5 5\r\n", b"hello"), {400}, True),
    ("H04", "CL fullwidth digit",
     req(b"POST /health/live HTTP/1.1\r\nHost: a\r\nContent-Length: \xef\xbc\x95\r\n\r\nhello"),
     {400}, True),
    ("H04", "CL 25 digits", post("Content-Length: " + "9" * 25 + "\r\n", b"hello"), {400}, True),
    ("H04", "CL 2^64+5 (wraps to 5)", post("Content-Length: 18446744073709551621\r\n", b"hello"),
     {400, 413}, True),
    ("H05", "TE gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
     {501}, True),
    ("H05", "TE identity", post("Transfer-Encoding: identity\r\n", b"0\r\n\r\n"), {400, 501}, True),
    ("H05", "TE xchunked", post("Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), {501}, True),
    ("H05", "TE chunked, chunked", post("Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
     {400}, True),
    ("H05", "TE chunked, gzip", post("Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
     {400, 501}, True),
    ("H05", "TE chunked twice as fields",
     post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
     {400}, True),
    ("H06", "TE chunked on HTTP/1.0",
     req("POST /health/live HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
     {400}, True),
    ("H07", "obs-fold SP", req("GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"),
     {400}, True),
    ("H07", "obs-fold HTAB", req("GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n"),
     {400}, True),
    ("H08", "space before colon", req("GET /health/live HTTP/1.1\r\nHost : a\r\n\r\n"), {400}, True),
    ("H08", "tab before colon", req("GET /health/live HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n"),
     {400}, True),
    ("H09", "bare CR in value", req("GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n"),
     {400}, True),
    ("H09", "bare CR in request line", req("GET /health/live\r HTTP/1.1\r\nHost: a\r\n\r\n"),
     {400}, True),
    ("H09", "bare LF terminators", req("GET /health/live HTTP/1.1\nHost: a\n\n"), {400}, True),
    ("H09", "bare LF after a header", req("GET /health/live HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n"),
     {400}, True),
    ("H09", "whitespace before first header",
     req("GET /health/live HTTP/1.1\r\n Host: a\r\n\r\n"), {400}, True),
    ("H10", "NUL in value", req(b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n"),
     {400}, True),
    ("H10", "0x01 in value", req(b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n"),
     {400}, True),
    ("H10", "0x0B in value", req(b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: b\x0bc\r\n\r\n"),
     {400}, True),
    ("H10", "0x1F in value", req(b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: b\x1fc\r\n\r\n"),
     {400}, True),
    ("H10", "DEL in value", req(b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n"),
     {400}, True),
    ("H10", "NUL in target", req(b"GET /health/live\x00 HTTP/1.1\r\nHost: a\r\n\r\n"), {400}, True),
    ("H10", "0x01 in target", req(b"GET /health/\x01live HTTP/1.1\r\nHost: a\r\n\r\n"), {400}, True),
    ("H10", "HTAB inside value allowed",
     req(b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: b\tc\r\n\r\n"), {200}, False),
    ("H11", "0x80-0xFF in value kept opaque",
     req(b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: \x80\xc3\xa9\xff\r\n\r\n"), {200}, False),
    ("H11", "'@' in field name", req("GET /health/live HTTP/1.1\r\nHost: a\r\nX-A@: b\r\n\r\n"),
     {400}, True),
    ("H11", "0x80 in field name",
     req(b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-\x80: b\r\n\r\n"), {400}, True),
    ("H11", "raw non-ASCII target", req(b"GET /health/liv\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
     {400}, True),
    ("H12", "HTTP/1.1 without Host", req("GET /health/live HTTP/1.1\r\n\r\n"), {400}, True),
    ("H12", "two Host fields", req("GET /health/live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
     {400}, True),
    ("H12", "Host with space", req("GET /health/live HTTP/1.1\r\nHost: a b\r\n\r\n"), {400}, True),
    ("H12", "Host with userinfo", req("GET /health/live HTTP/1.1\r\nHost: u@a\r\n\r\n"),
     {400}, True),
    ("H12", "Host with bad port", req("GET /health/live HTTP/1.1\r\nHost: a:99999x\r\n\r\n"),
     {400}, True),
    ("H12", "Host with path", req("GET /health/live HTTP/1.1\r\nHost: a/b\r\n\r\n"), {400}, True),
    ("H13", "request-target 5000 bytes",
     req("GET /" + "a" * 5000 + " HTTP/1.1\r\nHost: a\r\n\r\n"), {414}, True),
    ("H14", "head over 8 KiB",
     req("GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: " + "b" * 9000 + "\r\n\r\n"), {431}, True),
    ("H14", "100 header fields",
     req("GET /health/live HTTP/1.1\r\nHost: a\r\n" +
         "".join("X-F%d: v\r\n" % i for i in range(100)) + "\r\n"), {431}, True),
    ("H15", "Content-Length 70000, no body", post("Content-Length: 70000\r\n"), {413}, True),
    ("H17", "chunk size 17 F's", post("Transfer-Encoding: chunked\r\n",
                                       b"FFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n"), {400}, True),
    ("H17", "chunk size 16 F's (too big)", post("Transfer-Encoding: chunked\r\n",
                                                 b"FFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n"),
     {400, 413}, True),
    ("H17", "chunk size 0x10", post("Transfer-Encoding: chunked\r\n",
                                     b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n"), {400}, True),
    ("H17", "chunk size -1", post("Transfer-Encoding: chunked\r\n", b"-1\r\nx\r\n0\r\n\r\n"),
     {400}, True),
    ("H17", "chunk size ' 5'", post("Transfer-Encoding: chunked\r\n",
                                     b" 5\r\nhello\r\n0\r\n\r\n"), {400}, True),
    ("H17", "empty chunk size", post("Transfer-Encoding: chunked\r\n", b"\r\nhello\r\n0\r\n\r\n"),
     {400}, True),
    ("H17", "17 hex digits with leading zeros",
     post("Transfer-Encoding: chunked\r\n", b"00000000000000005\r\nhello\r\n0\r\n\r\n"),
     {400}, True),
    ("H18", "chunk data longer than size",
     post("Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX\r\n0\r\n\r\n"), {400}, True),
    ("H18", "chunk data shorter than size",
     post("Transfer-Encoding: chunked\r\n", b"5\r\nhel\r\n0\r\n\r\n"), {400}, True),
    ("H18", "10 KiB chunk extension",
     post("Transfer-Encoding: chunked\r\n",
          b"5;" + b"e" * 10240 + b"\r\nhello\r\n0\r\n\r\n"), {400}, True),
    ("H18", "garbage instead of the last CRLF",
     post("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nnot a trailer\r\n\r\n"),
     {400}, True),
    ("H20", "HTTP/1.2", req("GET /health/live HTTP/1.2\r\nHost: a\r\n\r\n"), {505}, True),
    ("H20", "HTTP/2.0", req("GET /health/live HTTP/2.0\r\nHost: a\r\n\r\n"), {505}, True),
    ("H20", "HTTP/1.10", req("GET /health/live HTTP/1.10\r\nHost: a\r\n\r\n"), {400}, True),
    ("H20", "lowercase http/1.1", req("GET /health/live http/1.1\r\nHost: a\r\n\r\n"), {400}, True),
    ("H20", "HTTP/2 preface", req("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), {400, 505}, True),
    ("H21", "unknown method", req("FOO /health/live HTTP/1.1\r\nHost: a\r\n\r\n"), {501}, True),
    ("H21", "lowercase get", req("get /health/live HTTP/1.1\r\nHost: a\r\n\r\n"), {501}, True),
    ("H21", "1 KiB method", req("G" * 1024 + " /health/live HTTP/1.1\r\nHost: a\r\n\r\n"),
     {501}, True),
    ("H22", "absolute-form routed by path",
     req("GET http://evil.example/health/live HTTP/1.1\r\nHost: a\r\n\r\n"), {200}, False),
    ("H22", "authority-form", req("CONNECT evil.example:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
     {400, 501}, True),
    ("H22", "OPTIONS *", req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), {400, 501}, True),
    ("H23", "%00 in path", req("GET /health/live%00 HTTP/1.1\r\nHost: a\r\n\r\n"), {400, 404},
     None),
    ("H23", "%zz in path", req("GET /health/%zz HTTP/1.1\r\nHost: a\r\n\r\n"), {400, 404}, None),
    ("H23", "trailing %", req("GET /health/live% HTTP/1.1\r\nHost: a\r\n\r\n"), {400, 404}, None),
    ("H23", "%2F in tenant slug", req("GET /t/a%2Fb/jwks.json HTTP/1.1\r\nHost: a\r\n\r\n"),
     {400, 404}, None),
    ("H23", "%252e%252e decoded once",
     req("GET /health/%252e%252e/health/live HTTP/1.1\r\nHost: a\r\n\r\n"), {400, 404}, None),
    ("H23", "/t/a/../b/ not normalised", req("GET /t/a/../b/ HTTP/1.1\r\nHost: a\r\n\r\n"),
     {400, 404}, None),
    ("H23", "dot segments never reach a route",
     req("GET /nope/../health/live HTTP/1.1\r\nHost: a\r\n\r\n"), {400, 404}, None),
    ("H27", "Expect: foo", post("Content-Length: 5\r\nExpect: foo\r\n", b"hello"), {417}, True),
]


def check_case(res, port, case):
    rid, label, raw, statuses, must_close = case
    name = "%s %s" % (rid, label)
    sock = th.connect(port)
    try:
        sock.sendall(raw)
        reader = th.Reader(sock)
        resp, _ = reader.read_final()
        if resp is None:
            res.check(name, False, "connection closed without a response")
            return
        ok = resp.status in statuses
        detail = "got %d %s, expected %s" % (resp.status, resp.reason, sorted(statuses))
        if ok and resp.status >= 400:
            ok = resp.header("x-request-id") is not None
            detail = "error response without X-Request-Id"
        if ok and must_close is True and resp.status in (400, 413, 414, 417, 431, 501, 505):
            # a framing error: "Connection: close" and the server really closes
            closed, extra = reader.closed_within(CLOSE_WAIT_S)
            ok = resp.closes() and closed and not extra and not reader.buf
            detail = "after %d: Connection header %r, closed %s, extra bytes %r" % (
                resp.status, resp.header("connection"), closed, (reader.buf + extra)[:80])
        res.check(name, ok, detail)
    finally:
        sock.close()


def check_h19_trailers(res, port):
    """Trailer fields never merge into the head: the body ends at the last chunk, so a
    pipelined GET after it is answered 200 (a trailer Content-Length applied would eat it)."""
    body = (b"5\r\nhello\r\n0\r\nContent-Length: 100\r\nHost: evil\r\n"
            b"Authorization: Bearer x\r\n\r\n")
    raw = post("Transfer-Encoding: chunked\r\n", body) + th.get("/health/live")
    sock = th.connect(port)
    try:
        sock.sendall(raw)
        reader = th.Reader(sock)
        first, _ = reader.read_final()
        if first is not None and first.status == 400:
            closed, extra = reader.closed_within(CLOSE_WAIT_S)
            res.check("H19 trailer fields refused (400, close)", first.closes() and closed and
                      not extra, "Connection %r closed %s" % (first.header("connection"), closed))
            return
        second, _ = reader.read_final()
        res.check("H19 trailer fields ignored (405 then 200 on the same connection)",
                  first is not None and first.status == 405 and second is not None and
                  second.status == 200, "got %r then %r" % (first, second))
    finally:
        sock.close()


def check_h24_pipeline(res, port):
    count = 100
    raw = b"".join(th.get("/health/live", extra="X-Request-Id: pipe-%03d\r\n" % i)
                   for i in range(count))
    sock = th.connect(port, timeout=15)
    try:
        sock.sendall(raw)
        reader = th.Reader(sock)
        ids = []
        statuses = set()
        for _ in range(count):
            resp = reader.read_response()
            if resp is None:
                break
            ids.append(resp.header("x-request-id"))
            statuses.add(resp.status)
        expected = ["pipe-%03d" % i for i in range(count)]
        res.check("H24 100 pipelined GETs in one send -> 100 responses in order",
                  ids == expected and statuses == {200},
                  "got %d responses, statuses %s, first mismatch %s" % (
                      len(ids), statuses,
                      next(((i, a) for i, a in enumerate(ids) if a != expected[i]), None)))
        # the connection stays usable afterwards
        sock.sendall(th.get("/health/live"))
        resp = reader.read_response()
        res.check("H24 keep-alive after the pipeline", resp is not None and resp.status == 200,
                  repr(resp))
    finally:
        sock.close()


def check_h24_error_then_request(res, port):
    bad = post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n")
    raw = bad + th.get("/health/live", extra="X-Request-Id: must-not-run\r\n")
    sock = th.connect(port)
    try:
        sock.sendall(raw)
        reader = th.Reader(sock)
        first, _ = reader.read_final()
        closed, extra = reader.closed_within(CLOSE_WAIT_S)
        rest = reader.buf + extra
        res.check("H24 framing error then valid request in one buffer -> one 400, close, "
                  "second never answered",
                  first is not None and first.status == 400 and first.closes() and closed and
                  b"HTTP/1.1" not in rest,
                  "first %r closed %s trailing %r" % (first, closed, rest[:100]))
    finally:
        sock.close()
    # also a valid request first: it is answered, then the error closes the rest
    raw = th.get("/health/live", extra="X-Request-Id: first-ok\r\n") + \
        req("GET /health/live HTTP/1.1\r\nHost : a\r\n\r\n") + \
        th.get("/health/live", extra="X-Request-Id: must-not-run\r\n")
    sock = th.connect(port)
    try:
        sock.sendall(raw)
        reader = th.Reader(sock)
        a = reader.read_response()
        b = reader.read_response()
        closed, extra = reader.closed_within(CLOSE_WAIT_S)
        rest = reader.buf + extra
        res.check("H24 ok, error, ok in one buffer -> 200, 400, close",
                  a is not None and a.status == 200 and a.header("x-request-id") == "first-ok"
                  and b is not None and b.status == 400 and closed and b"HTTP/1.1" not in rest,
                  "got %r, %r closed %s trailing %r" % (a, b, closed, rest[:100]))
    finally:
        sock.close()


def check_h27_continue_over_limit(res, port):
    raw = post("Content-Length: 70000\r\nExpect: 100-continue\r\n")
    sock = th.connect(port)
    try:
        sock.sendall(raw)
        reader = th.Reader(sock)
        resp, interim = reader.read_final()
        closed, extra = reader.closed_within(CLOSE_WAIT_S)
        res.check("H27 Expect: 100-continue with CL over the limit -> 413 without 100, close",
                  resp is not None and resp.status == 413 and not interim and resp.closes()
                  and closed, "interim %s final %r closed %s" % (interim, resp, closed))
    finally:
        sock.close()
    # within the limit: 100 Continue first, then the final answer after the body
    raw = post("Content-Length: 5\r\nExpect: 100-continue\r\n")
    sock = th.connect(port)
    try:
        sock.sendall(raw)
        reader = th.Reader(sock)
        first = reader.read_response()
        sock.sendall(b"hello")
        final, _ = reader.read_final()
        res.check("H27 Expect: 100-continue within the limit -> 100 then 405",
                  first is not None and first.status == 100 and final is not None and
                  final.status == 405, "got %r then %r" % (first, final))
    finally:
        sock.close()


def check_h28_request_id(res, port):
    def rid_for(value):
        raw = b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-Request-Id: " + value + b"\r\n\r\n"
        resp, _, sock = th.exchange(port, raw)
        sock.close()
        return resp

    def generated(resp):
        rid = resp.header("x-request-id") if resp is not None else None
        return rid is not None and len(rid) == 32 and all(c in "0123456789abcdef" for c in rid)

    resp = rid_for(b"abc-123_XYZ.~!")
    res.check("H28 printable X-Request-Id echoed", resp is not None and
              resp.header("x-request-id") == "abc-123_XYZ.~!", repr(resp and resp.headers))
    resp = rid_for(b"x" * 64)
    res.check("H28 64-char X-Request-Id echoed",
              resp is not None and resp.header("x-request-id") == "x" * 64, "")
    for label, value in (("65 chars", b"y" * 65), ("1 KiB", b"z" * 1024),
                         ("bytes 0x80-0xFF", b"ab\x80\xffcd"), ("HTAB inside", b"a\tb"),
                         ("space inside", b"a b")):
        resp = rid_for(value)
        res.check("H28 X-Request-Id with %s -> generated id" % label,
                  resp is not None and resp.status == 200 and generated(resp),
                  "got %r id %r" % (resp, resp and resp.header("x-request-id")))
    # CR inside the value is a framing error; the 400 must not reflect it either
    resp = rid_for(b"evil\rSet-Cookie: a=b")
    res.check("H28 X-Request-Id with CR -> 400 with a generated id, no injected header",
              resp is not None and resp.status == 400 and generated(resp) and
              resp.header("set-cookie") is None, repr(resp and resp.headers))


def check_h29_byte_at_a_time(res, port):
    raw = th.get("/health/live", extra="X-Request-Id: bytewise\r\n")
    whole, _, sock = th.exchange(port, raw)
    sock.close()
    sock = th.connect(port, timeout=10)
    try:
        for i in range(len(raw)):
            sock.send(raw[i:i + 1])
            time.sleep(0.005)
        split, _ = th.Reader(sock).read_final()
    finally:
        sock.close()
    res.check("H29 GET sent one byte at a time -> same response",
              whole is not None and split is not None and whole.status == split.status == 200
              and whole.body == split.body and split.header("x-request-id") == "bytewise",
              "whole %r split %r" % (whole, split))
    # a chunked POST split byte by byte, followed by a GET on the same connection
    raw = post("Transfer-Encoding: chunked\r\n", b"5;ext=1\r\nhello\r\n0\r\n\r\n") + \
        th.get("/health/live")
    sock = th.connect(port, timeout=10)
    try:
        for i in range(len(raw)):
            sock.send(raw[i:i + 1])
            time.sleep(0.003)
        reader = th.Reader(sock)
        a, _ = reader.read_final()
        b, _ = reader.read_final()
    finally:
        sock.close()
    res.check("H29 chunked POST + GET byte at a time -> 405 then 200",
              a is not None and a.status == 405 and b is not None and b.status == 200,
              "got %r, %r" % (a, b))


def check_keepalive_after_body(res, port):
    for label, first in (("Content-Length", post("Content-Length: 5\r\n", b"hello")),
                         ("chunked", post("Transfer-Encoding: chunked\r\n",
                                          b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"))):
        sock = th.connect(port)
        try:
            sock.sendall(first + th.get("/health/live"))
            reader = th.Reader(sock)
            a, _ = reader.read_final()
            b, _ = reader.read_final()
            res.check("framing: POST with %s body then GET pipelined -> 405, 200" % label,
                      a is not None and a.status == 405 and not a.closes() and
                      b is not None and b.status == 200, "got %r, %r" % (a, b))
        finally:
            sock.close()


def main():
    res = th.Results("HTTP framing (H01-H24, H27-H29)")
    srv = th.Server()
    try:
        srv.start()
        port = srv.port
        for case in CASES:
            res.run("%s %s" % (case[0], case[1]), check_case, res, port, case)
        res.run("H19", check_h19_trailers, res, port)
        res.run("H24 pipeline", check_h24_pipeline, res, port)
        res.run("H24 error", check_h24_error_then_request, res, port)
        res.run("H27", check_h27_continue_over_limit, res, port)
        res.run("H28", check_h28_request_id, res, port)
        res.run("H29", check_h29_byte_at_a_time, res, port)
        res.run("keep-alive after body", check_keepalive_after_body, res, port)
        resp, _, sock = th.exchange(port, th.get("/health/live"))
        sock.close()
        res.check("server still healthy after all cases", resp is not None and
                  resp.status == 200, repr(resp))
        th.check_clean_exit(res, srv)
    finally:
        srv.kill()
    res.finish()


if __name__ == "__main__":
    main()
