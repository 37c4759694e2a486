"""Helpers shared by the perf/ benchmarks (DESIGN.md §8).

Everything here binds only to 127.0.0.1, bounds every wait with a named constant, and tracks the
processes it starts so that the caller's `finally` (also reached on Ctrl-C and SIGTERM) stops them.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

LOOPBACK = "127.0.0.1"  # DESIGN.md §8: benchmarks bind only to loopback
STARTUP_WAIT_S = 15.0   # a Release server answers in well under a second; this covers a busy box
STOP_WAIT_S = 5.0       # grace between SIGTERM and SIGKILL
POLL_INTERVAL_S = 0.05  # readiness polling step
HTTP_TIMEOUT_S = 2.0    # one readiness probe
BUILD_TIMEOUT_S = 1200  # a cold Release build on the 2-core box, with others compiling
BUILD_JOBS = "2"        # the box has two cores

CLK_TCK = os.sysconf("SC_CLK_TCK")


def repo_root():
    """The repository root: perf/lib/perfutil.py is two levels below it."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg):
    """Progress goes to stderr so that stdout holds the figures."""
    print(msg, file=sys.stderr, flush=True)


def install_sigterm_as_interrupt():
    """SIGTERM takes the same path as Ctrl-C, so `finally` blocks stop the servers."""
    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)


def resolve_bin(arg_bin):
    """The Tessera binary: --bin if given, else build/tessera, built (Release) if missing."""
    root = repo_root()
    if arg_bin:
        path = os.path.abspath(arg_bin)
        if not os.access(path, os.X_OK):
            sys.exit("perf: --bin %s is not an executable file" % path)
        return path
    path = os.path.join(root, "build", "tessera")
    if os.access(path, os.X_OK):
        return path
    build = os.path.join(root, "build")
    log("perf: %s missing, building Release into %s" % (path, build))
    subprocess.run(["cmake", "-S", root, "-B", build, "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, timeout=BUILD_TIMEOUT_S, stdout=sys.stderr)
    subprocess.run(["cmake", "--build", build, "--target", "tessera", "-j", BUILD_JOBS],
                   check=True, timeout=BUILD_TIMEOUT_S, stdout=sys.stderr)
    return path


def free_port():
    """A port the kernel says is free now on 127.0.0.1 (a tiny race, acceptable for a benchmark)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Procs:
    """Processes started by a benchmark; stop_all() ends each one by its own id."""

    def __init__(self):
        self.procs = []

    def start(self, argv, env=None, stderr_path=None):
        err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        try:
            # A new session: Ctrl-C in the terminal reaches only us, and we stop the child.
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        finally:
            if stderr_path:
                err.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_WAIT_S)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in list(self.procs):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                log("perf: could not stop pid %d: %s" % (proc.pid, exc))


def http_get(port, path, timeout=HTTP_TIMEOUT_S):
    """(status, content-type, body bytes) of GET http://127.0.0.1:port/path."""
    url = "http://%s:%d%s" % (LOOPBACK, port, path)
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.headers.get("Content-Type"), resp.read()


def wait_ready(proc, port, path, stderr_path=None):
    """Poll GET path until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + STARTUP_WAIT_S
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with status %d%s"
                               % (proc.returncode, tail_of(stderr_path)))
        try:
            status, ctype, body = http_get(port, path)
            if status == 200:
                return ctype, body
            last = "status %d" % status
        except OSError as exc:
            last = str(exc)
        time.sleep(POLL_INTERVAL_S)
    raise RuntimeError("server on port %d not ready after %.0f s (%s)%s"
                       % (port, STARTUP_WAIT_S, last, tail_of(stderr_path)))


def tail_of(path, max_bytes=2000):
    """The end of a log file, for error messages."""
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        data = f.read()[-max_bytes:]
    return "\n--- %s ---\n%s" % (path, data.decode("utf-8", "replace"))


def tessera_env(port, extra=None):
    """The environment Tessera is benchmarked under (one shard, no access log)."""
    env = dict(os.environ)
    env.update({
        "TESSERA_SHARDS": "1",
        "TESSERA_ACCESS_LOG": "off",
        "TESSERA_LOG_LEVEL": "warn",
        "TESSERA_LISTEN": "%s:%d" % (LOOPBACK, port),
    })
    if extra:
        env.update(extra)
    return env


def cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    # comm (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def rss_bytes(pid):
    """VmRSS of the process, in bytes, from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                parts = line.split()
                assert parts[2] == "kB"
                return int(parts[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


NGINX_CONF = """\
# Written by perf/ for one benchmark run; prefix is the temp dir.
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp_body;
    proxy_temp_path {dir}/tmp_proxy;
    fastcgi_temp_path {dir}/tmp_fastcgi;
    uwsgi_temp_path {dir}/tmp_uwsgi;
    scgi_temp_path {dir}/tmp_scgi;
    # nginx closes a keep-alive connection after 1000 requests by default; the server under test
    # does not, so the baseline is not charged reconnects the other side never pays.
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    # A static file: keep its descriptor open instead of open/fstat/close per request.
    open_file_cache max=16 inactive=60s;
    open_file_cache_valid 3600s;
    server {{
        listen {host}:{port} backlog=4096;
        root {dir}/www;
        location = /health/live {{
            types {{ }}
            default_type "{ctype}";
        }}
    }}
}}
"""


def nginx_start(procs, port, body, ctype, workdir, prefix=(), worker_connections=4096):
    """Start nginx (one process, no master, in the foreground) serving body at /health/live.

    prefix: a wrapper that execs its command (taskset, prlimit), so the pid is nginx's own.
    Its descriptor limit is the one it inherits (see raise_nofile).
    """
    os.makedirs(os.path.join(workdir, "www", "health"), exist_ok=True)
    with open(os.path.join(workdir, "www", "health", "live"), "wb") as f:
        f.write(body)
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=workdir, host=LOOPBACK, port=port, ctype=ctype,
                                  worker_connections=worker_connections))
    argv = ["nginx", "-p", workdir, "-e", os.path.join(workdir, "error.log"), "-c", conf,
            "-g", "daemon off; master_process off;"]
    argv = list(prefix) + argv
    stderr_path = os.path.join(workdir, "nginx.stderr")
    proc = procs.start(argv, stderr_path=stderr_path)
    wait_ready(proc, port, "/health/live", stderr_path)
    return proc


def make_tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def raise_nofile(want):
    """Raise our soft RLIMIT_NOFILE towards want (capped by the hard limit, which an unprivileged
    container cannot raise); children inherit it. Returns the new soft limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
