# shellcheck shell=bash
# Shell functions shared by tests/run and deploy/dev/run: installing the Debian packages Tessera
# needs, finding free loopback ports, and starting and stopping a private Postgres and Redis.
# Sourced, never executed; the caller sets `set -euo pipefail`.

# Everything a fresh Debian 12 machine needs to build Tessera, run its tests, its fuzz targets and
# its benchmarks. clang and libclang-rt-14-dev give libFuzzer; nginx-light and wrk the benchmarks.
TESSERA_PACKAGES=(
    build-essential cmake pkg-config clang libclang-rt-14-dev
    liburing-dev libssl-dev openssl libxxhash-dev libpq-dev libhiredis-dev
    libjansson-dev libargon2-dev libcrypt-dev
    postgresql postgresql-client redis-server
    curl python3 nginx-light wrk procps util-linux
    nodejs npm
    libcurl4-openssl-dev python3-aiosmtpd apache2-utils john-data libunistring-dev faketime
)

# How long a service gets to answer after it was started: Postgres with fsync off starts in about
# a second, but a cold CI disk can take much longer. Half a minute bounds a wait that would
# otherwise hang a CI job until its 90-minute limit.
TESSERA_SERVICE_WAIT_S=30

tessera_log() {
    printf '==> %s\n' "$*" >&2
}

tessera_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Prints the packages of TESSERA_PACKAGES that are not installed. A package counts as installed when
# dpkg has it, or when an installed package provides it (postgresql-client-15 provides
# postgresql-client), so a machine set up by hand with the versioned names installs nothing.
tessera_missing_packages() {
    local installed
    installed=$(dpkg-query -W -f='${Status}\t${Package},${Provides}\n' 2>/dev/null |
        awk -F'\t' '$1 == "install ok installed" { print $2 }' |
        tr ',' '\n' | sed -e 's/(.*)//' -e 's/[[:space:]]//g' -e 's/:.*$//' | sort -u)
    local pkg
    for pkg in "${TESSERA_PACKAGES[@]}"; do
        grep -qxF -- "$pkg" <<<"$installed" || printf '%s\n' "$pkg"
    done
}

# Installs what is missing with apt-get; a machine that has everything runs no apt-get at all.
tessera_install_missing() {
    local missing
    mapfile -t missing < <(tessera_missing_packages)
    if ((${#missing[@]} == 0)); then
        tessera_log "all ${#TESSERA_PACKAGES[@]} packages present"
        return 0
    fi
    tessera_log "installing: ${missing[*]}"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || tessera_die "not root and no sudo: install ${missing[*]}"
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}"
}

# Prints a TCP port on 127.0.0.1 that nobody is listening on (the kernel picks it).
tessera_free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Succeeds when PORT can be bound on 127.0.0.1 right now.
tessera_port_is_free() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

# Prints the bin directory of the newest Postgres installed (/usr/lib/postgresql/<major>/bin).
tessera_pg_bindir() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
        sort -V | tail -n 1)
    [[ -n $dir && -x $dir/initdb ]] || tessera_die "no Postgres server under /usr/lib/postgresql"
    printf '%s\n' "$dir"
}

# Runs a command as the Postgres owner. Postgres refuses to run as root, so root runs it as the
# `postgres` system user; anyone else runs it as themselves. `cd /` first: the postgres user may not
# be allowed into the caller's working directory.
tessera_as_pg() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# The owner of the Postgres files: `postgres` when we are root, else ourselves.
tessera_pg_owner() {
    if ((EUID == 0)); then printf 'postgres\n'; else id -un; fi
}

# tessera_pg_init DATADIR SOCKDIR FAST
# Creates a cluster in DATADIR (which must not exist or be empty) listening on 127.0.0.1 only, its
# unix socket in SOCKDIR. Local socket connections use peer auth (the owner administers it over the
# socket); TCP connections need a password (scram-sha-256), as a real deployment would.
# FAST=1 turns durability off (fsync, full page writes): for throwaway test clusters only.
tessera_pg_init() {
    local datadir=$1 sockdir=$2 fast=$3 bindir owner
    bindir=$(tessera_pg_bindir)
    owner=$(tessera_pg_owner)
    mkdir -p "$datadir" "$sockdir"
    chown "$owner" "$datadir" "$sockdir"
    chmod 0700 "$datadir"
    tessera_as_pg "$bindir/initdb" -D "$datadir" --auth-local=peer --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$datadir.initdb.log" 2>&1 ||
        { cat "$datadir.initdb.log" >&2; tessera_die "initdb failed for $datadir"; }
    rm -f "$datadir.initdb.log"
    {
        printf '\n# Written by deploy/lib/common.sh.\n'
        printf "listen_addresses = '127.0.0.1'\n"
        printf "unix_socket_directories = '%s'\n" "$sockdir"
        printf "password_encryption = 'scram-sha-256'\n"
        if [[ $fast == 1 ]]; then
            printf 'fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n'
        fi
    } >>"$datadir/postgresql.conf"
}

# Prints the unix socket directory tessera_pg_init wrote into DATADIR's configuration.
tessera_pg_sockdir() {
    sed -n "s/^unix_socket_directories = '\(.*\)'$/\1/p" "$1/postgresql.conf" | tail -n 1
}

# tessera_pg_start DATADIR PORT LOGFILE
# Starts the cluster on PORT and waits, bounded, until it accepts connections.
tessera_pg_start() {
    local datadir=$1 port=$2 logfile=$3 bindir sockdir
    bindir=$(tessera_pg_bindir)
    sockdir=$(tessera_pg_sockdir "$datadir")
    touch "$logfile"
    chown "$(tessera_pg_owner)" "$logfile"
    tessera_as_pg "$bindir/pg_ctl" -D "$datadir" -l "$logfile" -o "-p $port" \
        -w -t "$TESSERA_SERVICE_WAIT_S" start >/dev/null ||
        { tail -n 30 "$logfile" >&2; tessera_die "Postgres did not start (log: $logfile)"; }
    local waited=0
    until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; do
        ((waited++ < TESSERA_SERVICE_WAIT_S * 10)) ||
            { tail -n 30 "$logfile" >&2; tessera_die "Postgres not ready on port $port"; }
        sleep 0.1
    done
    [[ -S $sockdir/.s.PGSQL.$port ]] || tessera_die "Postgres socket missing in $sockdir"
}

# tessera_pg_psql DATADIR PORT SQL...: runs SQL as the cluster owner over the unix socket, printing
# rows unaligned without headers (`SELECT count(*)` prints just the number).
tessera_pg_psql() {
    local datadir=$1 port=$2 sockdir bindir
    shift 2
    bindir=$(tessera_pg_bindir)
    sockdir=$(tessera_pg_sockdir "$datadir")
    local args=() sql
    for sql in "$@"; do args+=(-c "$sql"); done
    tessera_as_pg "$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$sockdir" -p "$port" -d postgres \
        "${args[@]}"
}

# tessera_pg_create_db DATADIR PORT DB USER PASSWORD: a login role owning a new database. The role
# may create databases: the store tests each make a fresh one, so they can run in parallel.
# The names are ours (no quoting needed); the password is hex, so it is safe in a literal.
tessera_pg_create_db() {
    local datadir=$1 port=$2 db=$3 user=$4 password=$5
    tessera_pg_psql "$datadir" "$port" \
        "CREATE ROLE $user LOGIN CREATEDB PASSWORD '$password'" \
        "CREATE DATABASE $db OWNER $user"
}

# Succeeds when a postmaster is running on DATADIR.
tessera_pg_running() {
    local bindir
    bindir=$(tessera_pg_bindir)
    [[ -f $1/postmaster.pid ]] && tessera_as_pg "$bindir/pg_ctl" -D "$1" status >/dev/null 2>&1
}

# tessera_pg_stop DATADIR MODE: stops the cluster (MODE fast or immediate) if it runs.
tessera_pg_stop() {
    local datadir=$1 mode=$2 bindir
    tessera_pg_running "$datadir" || return 0
    bindir=$(tessera_pg_bindir)
    tessera_as_pg "$bindir/pg_ctl" -D "$datadir" -m "$mode" -w -t "$TESSERA_SERVICE_WAIT_S" \
        stop >/dev/null 2>&1 || {
        # pg_ctl gave up: the postmaster's pid is the first line of postmaster.pid.
        local pid
        pid=$(head -n 1 "$datadir/postmaster.pid" 2>/dev/null || true)
        [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
        return 0
    }
}

# Prints 32 random bytes as hex: passwords for the private databases.
tessera_random_hex() {
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

# tessera_redis_start DIR PORT PERSIST
# Starts redis-server daemonized on 127.0.0.1:PORT, its files in DIR (pid, log, dump), and waits,
# bounded, for PING. PERSIST=0: no snapshots (tests); PERSIST=1: a snapshot on shutdown and every
# minute with changes (the dev instance keeps its state across runs).
tessera_redis_start() {
    local dir=$1 port=$2 persist=$3 save=''
    [[ $persist == 1 ]] && save='60 1'
    mkdir -p "$dir"
    rm -f "$dir/redis.pid"
    redis-server --port "$port" --bind 127.0.0.1 --save "$save" --appendonly no \
        --daemonize yes --dir "$dir" --pidfile "$dir/redis.pid" \
        --logfile "$dir/redis.log" >/dev/null ||
        tessera_die "redis-server did not start (log: $dir/redis.log)"
    local waited=0
    until [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; do
        ((waited++ < TESSERA_SERVICE_WAIT_S * 10)) ||
            { tail -n 30 "$dir/redis.log" >&2; tessera_die "Redis not ready on port $port"; }
        sleep 0.1
    done
}

# Prints the pid of the redis-server whose files are in DIR, if it still runs.
tessera_redis_pid() {
    local pid
    pid=$(cat "$1/redis.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(ps -o comm= -p "$pid" 2>/dev/null) == redis-server ]] || return 1
    printf '%s\n' "$pid"
}

# tessera_redis_stop DIR: stops the redis-server of DIR (SIGTERM: it saves if configured to, then
# exits) and waits, bounded, for it to be gone; SIGKILL if it will not go.
tessera_redis_stop() {
    local dir=$1 pid waited=0
    pid=$(tessera_redis_pid "$dir") || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited++ >= TESSERA_SERVICE_WAIT_S * 10)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
}
