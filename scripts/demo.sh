#!/usr/bin/env bash
# replwarden demo: a throwaway local primary, a healthy streaming standby and
# a rogue pg_receivewal client, with the daemon enforcing an example policy.
# Watch the rogue connection get terminated within seconds (and again each
# time it reconnects) while the standby is left alone. Ctrl-C stops it all
# and removes every file it made.
#
#   scripts/demo.sh                 # runs until Ctrl-C
#   DEMO_SECONDS=20 scripts/demo.sh # stops by itself after 20 s
#
# Environment: REPLWARDEN_PG_BIN (server binaries; default: the newest
# /usr/lib/postgresql/*/bin), REPLWARDEN_BIN (a built binary; default: build
# with cargo), DEMO_PORT (first of two ports; default 55432).
# As root, the servers run as the `postgres` system user.
# It runs scripts/setup.sh first (installs what is missing as root; as a
# user it prints the sudo command and stops with exit 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

pg_bin=${REPLWARDEN_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/postgres" ]; then
    echo "demo: no PostgreSQL server binaries found; install postgresql-15 or set REPLWARDEN_PG_BIN" >&2
    exit 1
fi
if [ -z "${REPLWARDEN_BIN:-}" ]; then
    cargo build --quiet
    REPLWARDEN_BIN=target/debug/replwarden
fi
port=${DEMO_PORT:-55432}
standby_port=$((port + 1))

work=$(mktemp -d /tmp/replwarden-demo.XXXXXX)
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work"

pids=()
cleanup() {
    set +e
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    # A backgrounded as_pg runs in a subshell: its $! is not pg_receivewal.
    pkill -f -- "pg_receivewal -D $work/" 2>/dev/null
    wait 2>/dev/null
    for c in standby primary; do
        [ -d "$work/$c" ] && as_pg "$pg_bin/pg_ctl" -D "$work/$c" -m immediate -w stop >/dev/null 2>&1
    done
    rm -rf "$work"
    echo "demo: stopped and cleaned up $work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

step() { echo "demo: $*"; }

step "creating a primary on port $port in $work"
as_pg "$pg_bin/initdb" -D "$work/primary" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
cat >>"$work/primary/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
wal_level = replica
max_wal_senders = 10
wal_receiver_status_interval = '1s'
fsync = off
EOF
start_server() { # data folder, log file
    as_pg "$pg_bin/pg_ctl" -D "$1" -l "$2" -w start >/dev/null || {
        echo "demo: the server in $1 did not start; its log:" >&2
        cat "$2" >&2
        exit 1
    }
}
start_server "$work/primary" "$work/primary.log"
psql() { command psql -X -q -h 127.0.0.1 -U postgres -d postgres "$@"; }
psql -p "$port" -c "CREATE ROLE replicator LOGIN REPLICATION" \
    -c "CREATE ROLE replwarden LOGIN" \
    -c "GRANT pg_monitor, pg_signal_backend TO replwarden"

step "creating a streaming standby 'demo_standby' on port $standby_port"
as_pg "$pg_bin/pg_basebackup" -D "$work/standby" -d "host=127.0.0.1 port=$port user=replicator" -X stream -c fast --no-sync
cat >>"$work/standby/postgresql.conf" <<EOF
port = $standby_port
primary_conninfo = 'host=127.0.0.1 port=$port user=replicator application_name=demo_standby'
EOF
as_pg touch "$work/standby/standby.signal"
start_server "$work/standby" "$work/standby.log"

step "starting a rogue client: pg_receivewal as 'rogue_receiver' (it reconnects every 5 s)"
as_pg mkdir "$work/rogue"
as_pg "$pg_bin/pg_receivewal" -D "$work/rogue" --no-sync \
    -d "host=127.0.0.1 port=$port user=replicator application_name=rogue_receiver" >"$work/rogue.log" 2>&1 &
pids+=($!)

cat >"$work/replwarden.toml" <<EOF
[postgres]
conninfo = "host=127.0.0.1 port=$port dbname=postgres user=replwarden"

[daemon]
interval = "1s"

[[rule]]
name = "no-rogue-tools"
application_name = ["rogue_*", "adhoc_*"]
grace = "2s"
action = "terminate"

[[rule]]
name = "standby-too-far-behind"
application_name = ["demo_standby"]
replay_lag = "5m"
replay_lag_bytes = "1GB"
grace = "2m"
action = "terminate"
EOF
step "policy ($work/replwarden.toml):"
"$REPLWARDEN_BIN" check --config "$work/replwarden.toml"
sleep 1
step "what the daemon would do right now:"
"$REPLWARDEN_BIN" plan --config "$work/replwarden.toml"
step "running the daemon (Ctrl-C to stop)"
"$REPLWARDEN_BIN" run --config "$work/replwarden.toml" --log-format text &
daemon=$!
pids+=("$daemon")
if [ -n "${DEMO_SECONDS:-}" ]; then
    sleep "$DEMO_SECONDS"
    kill -TERM "$daemon"
fi
wait "$daemon" || true
