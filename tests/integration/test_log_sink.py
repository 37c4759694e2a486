#!/usr/bin/env python3
"""SECURITY F12: a log sink that stops reading never stops the event loop (core/log.c).

The server's stderr is a pipe this test stops reading once the server listens. With the
access log on, a few hundred requests fill the pipe (64 KiB); then:
- 2,000 more requests on keep-alive connections, each with a 5 s timeout, all answer 200
  (a shard writing its log with a blocking write would hang on the first full pipe);
- /metrics counts the lines dropped (tessera_log_dropped_lines_total > 0);
- once the pipe is read again, new lines arrive whole (every line read is one JSON object)
  and the server exits 0 on SIGTERM with no sanitizer report.
No Postgres needed.
"""
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time

from tessera_harness import BASE_ENV, SANITIZER_MARKERS, Results, tessera_bin

REQUESTS = 2000
CONNECTIONS = 4
REQUEST_TIMEOUT_S = 5.0
START_TIMEOUT_S = 30.0


def start():
    env = dict(os.environ, **BASE_ENV)
    env.update(TESSERA_SHARDS="2", TESSERA_ACCESS_LOG="on", TESSERA_LOG_LEVEL="info")
    proc = subprocess.Popen([tessera_bin(), "serve"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode("utf-8", "replace")
        m = re.search(r'"msg":"listening".*"port":(\d+)', line)
        if m:
            return proc, int(m.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("server did not log 'listening'")


def hammer(port, n, answers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        for _ in range(n):
            conn.request("GET", "/health/live")
            resp = conn.getresponse()
            resp.read()
            answers.append(resp.status)
    except (OSError, http.client.HTTPException) as e:
        answers.append(repr(e))
    finally:
        conn.close()


def dropped(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    m = re.search(r"^tessera_log_dropped_lines_total (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def run(res):
    proc, port = start()
    try:
        answers = []
        threads = [threading.Thread(target=hammer, args=(port, REQUESTS // CONNECTIONS, answers))
                   for _ in range(CONNECTIONS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(REQUESTS * REQUEST_TIMEOUT_S)
        took = time.monotonic() - t0
        bad = [a for a in answers if a != 200]
        res.check("F12: %d requests with nobody reading the log: every one 200 (%.1f s)" % (REQUESTS, took),
                  len(answers) == REQUESTS and not bad, repr(bad[:3]))
        lost = dropped(port)
        res.check("F12: the lines that found no room are counted in /metrics (%s)" % lost, lost and lost > 0,
                  repr(lost))
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr.read().decode("utf-8", "replace")
                                                              .splitlines()), daemon=True)
        reader.start()  # the sink reads again
        time.sleep(0.5)
        marker = []
        hammer(port, 20, marker)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        reader.join(10)
        whole = all(json.loads(line) is not None for line in lines if line.strip())
        tail = [line for line in lines if '"path":"/health/live"' in line]
        res.check("... read again: the server logs on, every line whole JSON", marker == [200] * 20 and whole and tail,
                  repr(lines[-2:]))
        report = next((m for m in SANITIZER_MARKERS if any(m in line for line in lines)), None)
        res.check("server exits 0 on SIGTERM, no sanitizer report", rc == 0 and report is None, repr((rc, report)))
    finally:
        if proc.poll() is None:
            proc.kill()


def main():
    res = Results("a log sink that stops reading (F12)")
    res.run("F12", run, res)
    res.finish()


if __name__ == "__main__":
    main()
