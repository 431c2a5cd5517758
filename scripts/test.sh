#!/usr/bin/env bash
# The test suite, as CI runs it: fetches the server binaries of the other
# PostgreSQL majors (scripts/fetch-postgres.sh, into .pg-cache/), points
# the harness at them (REPLWARDEN_PG_BINS) and runs `cargo test --locked`,
# after `cargo clippy` (every target, warnings are errors; the lints chosen
# are in Cargo.toml's [lints] and at the top of src/lib.rs).
# Extra arguments go to cargo test (e.g. `scripts/test.sh --test majors`).
# It runs scripts/setup.sh first (installs what is missing as root; as a
# user it prints the sudo command and stops with exit 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo clippy --all-targets --locked -- -D warnings
# As root the servers run as the postgres user, so the cache must be
# reachable by it: a clone under a closed folder (e.g. /root) gets a cache
# outside it.
if [ "$(id -u)" = 0 ] && [ -z "${REPLWARDEN_PG_CACHE:-}" ] &&
    ! setpriv --reuid=postgres --regid=postgres --init-groups -- test -x "$PWD/scripts"; then
    export REPLWARDEN_PG_CACHE=/var/cache/replwarden-pg
fi
fetched=$(scripts/fetch-postgres.sh)
echo "$fetched"
eval "$(grep '^export REPLWARDEN_PG_BINS=' <<<"$fetched")"
[ -n "${REPLWARDEN_PG_BINS:-}" ] || { echo "test.sh: fetch-postgres.sh gave no REPLWARDEN_PG_BINS" >&2; exit 1; }
exec cargo test --locked "$@"
