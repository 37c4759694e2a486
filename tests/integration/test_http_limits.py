#!/usr/bin/env python3
"""Size limits, back-pressure and deadlines end to end: SECURITY.md H13-H16, H25, H26, F17.

F17: a one-shard server whose slab holds F17_SLAB connections, every slot taken by an idle
connection: each of F17_FLOOD more is closed at once (and counted rejected), the held ones are
then all served, and the flood leaves RSS flat.

Timings are behaviour checks with wide windows (a sanitizer build is slow), not performance.
"""

import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_harness as th  # noqa: E402

CLOSE_WAIT_S = 4.0
# The configured 2 s deadlines must cut within this window (wide: sanitizer build, 2 cores).
CUT_MIN_S = 1.5
CUT_MAX_S = 4.0
# H25: growth of the server's resident memory allowed while 10,000 requests sit unread.
RSS_GROWTH_MAX_KIB = 64 * 1024
PIPELINE_COUNT = 10000


def post_head(headers):
    return ("POST /health/live HTTP/1.1\r\nHost: a\r\n" + headers + "\r\n").encode()


def expect_error_close(res, name, sock, status):
    reader = th.Reader(sock)
    resp, _ = reader.read_final()
    closed, extra = reader.closed_within(CLOSE_WAIT_S)
    res.check(name, resp is not None and resp.status == status and resp.closes() and closed
              and not extra, "got %r Connection %r closed %s" % (
                  resp, resp and resp.header("connection"), closed))
    return resp


def check_sizes(res, port):
    sock = th.connect(port)
    try:
        sock.sendall(("GET /" + "a" * 4200 + " HTTP/1.1\r\nHost: a\r\n\r\n").encode())
        expect_error_close(res, "H13 request-target of 4200 bytes -> 414, close", sock, 414)
    finally:
        sock.close()
    sock = th.connect(port)
    try:
        sock.sendall(("GET /health/live HTTP/1.1\r\nHost: a\r\n" +
                      "".join("X-L%d: %s\r\n" % (i, "v" * 200) for i in range(45)) +
                      "\r\n").encode())
        expect_error_close(res, "H14 head of ~9.5 KiB -> 431, close", sock, 431)
    finally:
        sock.close()
    sock = th.connect(port)
    try:
        sock.sendall(("GET /health/live HTTP/1.1\r\nHost: a\r\n" +
                      "".join("X-F%d: v\r\n" % i for i in range(65)) + "\r\n").encode())
        expect_error_close(res, "H14 65 header fields (+Host) -> 431, close", sock, 431)
    finally:
        sock.close()
    sock = th.connect(port)
    try:
        # 63 + Host = 64 fields: exactly at the limit, accepted
        sock.sendall(("GET /health/live HTTP/1.1\r\nHost: a\r\n" +
                      "".join("X-F%d: v\r\n" % i for i in range(63)) + "\r\n").encode())
        resp, _ = th.Reader(sock).read_final()
        res.check("H14 64 header fields (at the limit) -> 200", resp is not None and
                  resp.status == 200, repr(resp))
    finally:
        sock.close()
    check_h15(res, port)
    check_h16(res, port)


def check_h15(res, port):
    sock = th.connect(port)
    try:
        sock.sendall(post_head("Content-Length: 70000\r\n"))
        start = time.monotonic()
        expect_error_close(res, "H15 Content-Length 70000 -> 413 before any body byte, close",
                           sock, 413)
        print("     413 arrived after %.3f s with no body sent" % (time.monotonic() - start))
    finally:
        sock.close()
    sock = th.connect(port)
    try:
        body = b"x" * 65536
        sock.sendall(post_head("Content-Length: 65536\r\n") + body + th.get("/health/live"))
        reader = th.Reader(sock)
        a, _ = reader.read_final()
        b, _ = reader.read_final()
        res.check("H15 body of exactly 64 KiB accepted (405) and keep-alive (200)",
                  a is not None and a.status == 405 and b is not None and b.status == 200,
                  "got %r, %r" % (a, b))
    finally:
        sock.close()


def check_h16(res, port):
    sock = th.connect(port)
    try:
        sock.sendall(post_head("Transfer-Encoding: chunked\r\n"))
        sent = 0
        chunk = b"1000\r\n" + b"c" * 4096 + b"\r\n"
        try:
            for _ in range(20):  # 80 KiB in 4 KiB chunks: crosses 64 KiB at the 17th
                sock.sendall(chunk)
                sent += 4096
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have closed after its 413 already
        print("     sent %d chunk bytes" % sent)
        expect_error_close(res, "H16 chunked body crossing 64 KiB -> 413, close", sock, 413)
    finally:
        sock.close()


def check_configured_limits(res):
    srv = th.Server(TESSERA_MAX_BODY_BYTES=1000, TESSERA_MAX_HEADER_FIELDS=8,
                    TESSERA_MAX_HEAD_BYTES=1024)
    try:
        srv.start()
        sock = th.connect(srv.port)
        try:
            sock.sendall(post_head("Content-Length: 1001\r\n"))
            expect_error_close(res, "H15 TESSERA_MAX_BODY_BYTES=1000: CL 1001 -> 413", sock, 413)
        finally:
            sock.close()
        resp, _, sock = th.exchange(srv.port, post_head("Content-Length: 1000\r\n") +
                                    b"y" * 1000)
        sock.close()
        res.check("H15 TESSERA_MAX_BODY_BYTES=1000: CL 1000 -> 405", resp is not None and
                  resp.status == 405, repr(resp))
        sock = th.connect(srv.port)
        try:
            sock.sendall(("GET /health/live HTTP/1.1\r\nHost: a\r\n" +
                          "".join("X-F%d: v\r\n" % i for i in range(8)) + "\r\n").encode())
            expect_error_close(res, "H14 TESSERA_MAX_HEADER_FIELDS=8: 9 fields -> 431", sock, 431)
        finally:
            sock.close()
        sock = th.connect(srv.port)
        try:
            sock.sendall(("GET /health/live HTTP/1.1\r\nHost: a\r\nX-A: " + "b" * 1100 +
                          "\r\n\r\n").encode())
            expect_error_close(res, "H14 TESSERA_MAX_HEAD_BYTES=1024: 1.1 KiB head -> 431",
                               sock, 431)
        finally:
            sock.close()
        th.check_clean_exit(res, srv, "configured-limits server exits 0, no sanitizer report")
    finally:
        srv.kill()


class Scraper:
    """Scrapes /metrics over one keep-alive connection, so that earlier scrapes' closes
    (processed asynchronously by the server) never show up in the open-connection gauge."""

    def __init__(self, port):
        self.port = port
        self.sock = None
        self.reader = None

    def body(self):
        for _ in range(2):
            if self.sock is None:
                self.sock = th.connect(self.port)
                self.reader = th.Reader(self.sock)
            try:
                self.sock.sendall(th.get("/metrics"))
                resp = self.reader.read_response()
                if resp is not None:
                    return resp.body.decode()
            except OSError:
                pass
            self.close()  # the idle timeout took it: reconnect once
        raise RuntimeError("cannot scrape /metrics")

    def metric_sum(self, name):
        """Sum of a metric's samples over all label sets."""
        total = 0
        for line in self.body().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def open_connections(self):
        """Open connections the server reports, less the scrape's own."""
        return self.metric_sum("tessera_connections_open") - 1

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def check_h25(res):
    srv = th.Server(TESSERA_IDLE_TIMEOUT_MS=3000)
    try:
        srv.start()
        # warm up the server so the baseline includes its steady-state allocations
        for _ in range(3):
            resp, _, s = th.exchange(srv.port, th.get("/health/live"))
            s.close()
        scraper = Scraper(srv.port)
        # the warm-up connections' closes may still be in flight: wait for none open
        settle = time.monotonic()
        while scraper.open_connections() != 0 and time.monotonic() - settle < 3:
            time.sleep(0.05)
        baseline_open = scraper.open_connections()
        rss_before = th.vm_rss_kib(srv.pid())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # a small receive window makes the server's queued responses back up quickly
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        sock.setblocking(False)
        # /metrics answers are a few KiB each: 10,000 of them (tens of MiB) cannot all sit
        # in kernel buffers, so the server has to stop reading (back-pressure)
        data = b"".join(th.get("/metrics", extra="X-Request-Id: p%05d\r\n" % i)
                        for i in range(PIPELINE_COUNT))
        sent = 0
        last_progress = time.monotonic()
        start = time.monotonic()
        # send all we can; stop when the server has stopped reading for 1 s (back-pressure)
        while sent < len(data) and time.monotonic() - last_progress < 1.0 and \
                time.monotonic() - start < 20:
            _, writable, _ = select.select([], [sock], [], 0.2)
            if writable:
                try:
                    n = sock.send(data[sent:sent + 65536])
                except (BlockingIOError, InterruptedError):
                    n = 0
                if n > 0:
                    sent += n
                    last_progress = time.monotonic()
        sent_done = time.monotonic()
        rss_after = th.vm_rss_kib(srv.pid())
        growth = rss_after - rss_before
        print("     sent %d of %d bytes (%d requests) in %.2f s; VmRSS %d -> %d KiB (+%d)" % (
            sent, len(data), PIPELINE_COUNT, sent_done - start, rss_before, rss_after, growth))
        res.check("H25 memory bounded while 10,000 pipelined requests go unread (+%d KiB)"
                  % growth, growth < RSS_GROWTH_MAX_KIB, "growth %d KiB" % growth)
        # Never read. The server's FIN may sit behind unsent responses (the client's window
        # is closed), so watch the server's own gauge of open connections instead.
        closed_at = None
        peak = rss_after
        stalled_open = scraper.open_connections()
        res.check("H25 the stalled connection is counted open (%g, baseline %g)" % (
            stalled_open, baseline_open), stalled_open == baseline_open + 1, "")
        while time.monotonic() - sent_done < 15:
            peak = max(peak, th.vm_rss_kib(srv.pid()))
            if scraper.open_connections() == baseline_open:
                closed_at = time.monotonic() - sent_done
                break
            time.sleep(0.25)
        print("     server dropped the connection %s s after the client stalled; peak VmRSS "
              "+%d KiB; received_bytes_total %s" % (
                  "%.2f" % closed_at if closed_at is not None else "never (15 s)",
                  peak - rss_before, scraper.metric_sum("tessera_received_bytes_total")))
        res.check("H25 client that never reads is closed by the idle timeout (3 s)",
                  closed_at is not None and 2.0 <= closed_at < 10.0, "closed_at %r" % closed_at)
        res.check("H25 peak memory bounded (+%d KiB)" % (peak - rss_before),
                  peak - rss_before < RSS_GROWTH_MAX_KIB, "")
        # Now read: what was queued arrives, in order, then the connection ends.
        sock.setblocking(True)
        sock.settimeout(5)
        reader = th.Reader(sock)
        got = 0
        in_order = True
        try:
            while True:
                resp = reader.read_response()
                if resp is None:
                    break
                in_order = in_order and resp.header("x-request-id") == "p%05d" % got
                got += 1
        except (socket.timeout, RuntimeError) as exc:
            print("     reading the queued responses stopped: %s" % exc)
        print("     %d whole responses arrived before the end; EOF/reset %s" % (got, reader.eof))
        res.check("H25 after the close the client sees the end (EOF or reset); what arrived is in order",
                  in_order and reader.eof, "got %d in order %s eof %s" % (got, in_order,
                                                                         reader.eof))
        sock.close()
        scraper.close()
        resp, _, s = th.exchange(srv.port, th.get("/health/live"))
        s.close()
        res.check("H25 server still serves afterwards", resp is not None and resp.status == 200,
                  repr(resp))
        th.check_clean_exit(res, srv, "H25 server exits 0, no sanitizer report")
    finally:
        srv.kill()


def time_until_close(sock, reader, limit):
    """Seconds until EOF/reset (reading any response on the way), or None."""
    start = time.monotonic()
    closed, extra = reader.closed_within(limit)
    reader.buf += extra
    return (time.monotonic() - start) if closed else None


def check_slowloris(res, port):
    raw = th.get("/health/live", extra="X-Slow: " + "s" * 40 + "\r\n")
    sock = th.connect(port)
    reader = th.Reader(sock)
    try:
        first = time.monotonic()
        cut = None
        for i in range(len(raw)):
            try:
                sock.send(raw[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                cut = time.monotonic() - first
                break
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                left = time_until_close(sock, reader, CLOSE_WAIT_S)
                cut = time.monotonic() - first if left is not None else None
                break
            if time.monotonic() - first > 8:
                break
        text = reader.buf.decode("latin-1")
        print("     slow header (1 byte / 0.5 s) cut after %s s; got %r" % (
            "%.2f" % cut if cut is not None else "never", text[:40]))
        res.check("H26 slowloris header cut at the 2 s header deadline from the first byte "
                  "(not reset per byte), 408 + close",
                  cut is not None and CUT_MIN_S <= cut <= CUT_MAX_S and
                  text.startswith("HTTP/1.1 408") and "Connection: close" in text,
                  "cut %r response %r" % (cut, text[:80]))
    finally:
        sock.close()


def check_silent(res, port):
    sock = th.connect(port)
    try:
        reader = th.Reader(sock)
        cut = time_until_close(sock, reader, 8)
        print("     silent new connection closed after %s s, bytes %r" % (
            "%.2f" % cut if cut is not None else "never", reader.buf[:40]))
        res.check("H26 silent new connection closed at the header deadline without an answer",
                  cut is not None and CUT_MIN_S <= cut <= CUT_MAX_S and not reader.buf,
                  "cut %r bytes %r" % (cut, reader.buf[:80]))
    finally:
        sock.close()


def check_slow_body(res, port):
    sock = th.connect(port)
    reader = th.Reader(sock)
    try:
        sock.sendall(post_head("Content-Length: 60000\r\n"))
        start = time.monotonic()
        cut = None
        while time.monotonic() - start < 8:
            try:
                sock.send(b"b")
            except (BrokenPipeError, ConnectionResetError):
                cut = time.monotonic() - start
                break
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                left = time_until_close(sock, reader, CLOSE_WAIT_S)
                cut = time.monotonic() - start if left is not None else None
                break
        text = reader.buf.decode("latin-1")
        print("     slow body (1 byte / 0.2 s) cut after %s s; got %r" % (
            "%.2f" % cut if cut is not None else "never", text[:40]))
        res.check("H26 slow body cut at the 2 s body deadline, 408 + close",
                  cut is not None and CUT_MIN_S <= cut <= CUT_MAX_S and
                  text.startswith("HTTP/1.1 408") and "Connection: close" in text,
                  "cut %r response %r" % (cut, text[:80]))
    finally:
        sock.close()


def check_idle(res, port):
    sock = th.connect(port)
    reader = th.Reader(sock)
    try:
        sock.sendall(th.get("/health/live"))
        resp = reader.read_response()
        cut = time_until_close(sock, reader, 8)
        print("     idle keep-alive closed %s s after the response, bytes %r" % (
            "%.2f" % cut if cut is not None else "never", reader.buf[:40]))
        res.check("H26 idle keep-alive closed silently at the 2 s idle deadline",
                  resp is not None and resp.status == 200 and cut is not None and
                  CUT_MIN_S <= cut <= CUT_MAX_S and not reader.buf,
                  "resp %r cut %r bytes %r" % (resp, cut, reader.buf[:80]))
    finally:
        sock.close()
    # activity within the idle time keeps the connection open: 3 requests 1 s apart
    sock = th.connect(port)
    reader = th.Reader(sock)
    try:
        ok = True
        for _ in range(3):
            sock.sendall(th.get("/health/live"))
            resp = reader.read_response()
            ok = ok and resp is not None and resp.status == 200
            time.sleep(1.0)
        res.check("H26 keep-alive used every 1 s survives past 2 s", ok, "")
    finally:
        sock.close()


def check_deadlines(res):
    srv = th.Server(TESSERA_HEADER_TIMEOUT_MS=2000, TESSERA_BODY_TIMEOUT_MS=2000,
                    TESSERA_IDLE_TIMEOUT_MS=2000)
    try:
        srv.start()
        res.run("H26 slowloris", check_slowloris, res, srv.port)
        res.run("H26 silent", check_silent, res, srv.port)
        res.run("H26 slow body", check_slow_body, res, srv.port)
        res.run("H26 idle", check_idle, res, srv.port)
        th.check_clean_exit(res, srv, "H26 server exits 0, no sanitizer report")
    finally:
        srv.kill()


F17_SLAB = 32            # TESSERA_MAX_CONNECTIONS of the flood's server (one shard)
F17_FLOOD = 600          # connections past the slab
F17_BATCH = 100          # opened together, then each checked closed
F17_CLOSE_S = 5.0        # each is closed within this (at once, but a sanitizer build is slow)
F17_RSS_GROWTH_KIB = 4 * 1024  # the flood keeps no state: RSS stays within this


def served_on(sock):
    """A request on a kept-alive connection answered 200."""
    try:
        sock.sendall(th.get("/health/live"))
        resp, _ = th.Reader(sock).read_final()
    except OSError:
        return False
    return resp is not None and resp.status == 200


def rejected_total(port):
    """The rejected-connections counter, read once a slot is free to read it on (a reading
    connection closed at once reads as nothing: tried again)."""
    deadline = time.monotonic() + F17_CLOSE_S
    value = 0.0
    while value == 0 and time.monotonic() < deadline:
        try:
            value = th.metric_sum(port, "tessera_connections_rejected_total")
        except OSError:
            pass
        if value == 0:
            time.sleep(0.1)
    return value


def check_f17(res):
    srv = th.Server(TESSERA_SHARDS=1, TESSERA_MAX_CONNECTIONS=F17_SLAB,
                    TESSERA_HEADER_TIMEOUT_MS=120000)  # the held ones outlast a slow flood
    try:
        srv.start()  # nothing has connected yet: every slot is free, nothing was rejected
        held = [th.connect(srv.port) for _ in range(F17_SLAB)]
        ready = sum(served_on(sock) for sock in held)  # each holds a slot, answered once
        res.check("F17: %d kept-alive connections fill the slab (setup)" % F17_SLAB, ready == F17_SLAB,
                  "%d answered" % ready)
        rss0 = th.vm_rss_kib(srv.pid())
        closed = 0
        for _ in range(F17_FLOOD // F17_BATCH):
            batch = [th.connect(srv.port) for _ in range(F17_BATCH)]
            closed += sum(th.wait_closed(sock, F17_CLOSE_S) is not None for sock in batch)
            for sock in batch:
                sock.close()
        rss1 = th.vm_rss_kib(srv.pid())
        res.check("F17: with the slab full, each of %d more connections is closed at once" % F17_FLOOD,
                  closed == F17_FLOOD, "%d closed" % closed)
        served = sum(served_on(sock) for sock in held)
        for sock in held:
            sock.close()
        res.check("F17: ... the %d held connections are all served" % F17_SLAB, served == F17_SLAB,
                  "%d served" % served)
        res.check("F17: ... memory flat (RSS %d → %d KiB)" % (rss0, rss1), rss1 - rss0 <= F17_RSS_GROWTH_KIB)
        rejected = rejected_total(srv.port)
        res.check("F17: ... and counted in tessera_connections_rejected_total", rejected >= F17_FLOOD,
                  repr(rejected))
        th.check_clean_exit(res, srv)
    finally:
        srv.kill()


def main():
    res = th.Results("HTTP limits (H13-H16, H25, H26, F17)")
    srv = th.Server()
    try:
        srv.start()
        res.run("H13-H16", check_sizes, res, srv.port)
        th.check_clean_exit(res, srv)
    finally:
        srv.kill()
    res.run("configured limits", check_configured_limits, res)
    res.run("H25", check_h25, res)
    res.run("H26", check_deadlines, res)
    res.run("F17", check_f17, res)
    res.finish()


if __name__ == "__main__":
    main()
