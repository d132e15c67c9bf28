#!/usr/bin/env bash
# Makes sure Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432) answer:
# on the project's machines they already run; on a fresh machine this starts
# throwaway instances under var/services/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="$root/var/services"
mkdir -p "$state"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 6379; then
    echo "Starting Redis on 127.0.0.1:6379"
    redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --dir "$state" --logfile "$state/redis.log"
    for _ in $(seq 50); do port_open 6379 && break; sleep 0.1; done
fi

if ! port_open 5432; then
    bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    pgdata="$state/postgres"
    echo "Starting PostgreSQL on 127.0.0.1:5432 ($pgdata)"
    if [ "$(id -u)" = 0 ]; then RUN=(su postgres -s /bin/bash -c); chown -R postgres "$state" 2>/dev/null || true; chmod 755 "$root/var" "$state"; else RUN=(bash -c); fi
    if [ ! -s "$pgdata/PG_VERSION" ]; then
        "${RUN[@]}" "$bindir/initdb -D '$pgdata' -A trust -U postgres >/dev/null"
    fi
    "${RUN[@]}" "$bindir/pg_ctl -D '$pgdata' -o \"-p 5432 -k '$pgdata' -c listen_addresses=127.0.0.1 -c fsync=off\" -l '$pgdata/log' -w start >/dev/null"
fi
