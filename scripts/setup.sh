#!/usr/bin/env bash
# Machine set-up for the demo, the tests and CI (Debian/Ubuntu): installs
# every Debian package they need that is missing, and nothing else.
#
#   sudo scripts/setup.sh    # installs what is missing (apt-get update once)
#   scripts/setup.sh         # as a user: prints the sudo command(s), exit 2
#
# scripts/demo.sh, scripts/test.sh and .ci/run run it first. When everything
# is there it only checks (no apt-get update), in well under a second.
# PostgreSQL 15 comes without a cluster of its own (create_main_cluster =
# false is set before the install): the demo and the tests make throwaway
# clusters, the package test one with pg_createcluster. The Rust toolchain
# is assumed (https://rustup.rs); it is checked, not installed, except for
# its clippy component (scripts/test.sh runs cargo clippy), which rustup
# adds when it is missing.
# Exit codes: 0 all there (or installed); 1 a required package is not
# available from apt; 2 something is missing and this is not root (or not
# Debian), or cargo is missing: the message says what to do.
set -euo pipefail
export PATH="${HOME:-/nonexistent}/.cargo/bin:$PATH:/usr/sbin:/sbin"

# package  probe: a command on PATH, or an absolute path that must exist.
wanted=(
    # PostgreSQL: server, client tools, pg_createcluster/pg_ctlcluster.
    "postgresql-15 /usr/lib/postgresql/15/bin/postgres"
    "postgresql-client-15 /usr/lib/postgresql/15/bin/psql"
    "postgresql-common pg_createcluster"
    # scripts/fetch-postgres.sh (the other majors' server binaries, from npm).
    "npm npm"
    "jq jq"
    "tar tar"
    # Tests: setpriv/runuser, test certificates, systemd-analyze (unit
    # checks), dpkg-deb (package test), perl; OpenSSL headers for the build.
    "util-linux setpriv"
    "openssl openssl"
    "systemd systemd-analyze"
    "dpkg dpkg-deb"
    "perl perl"
    "pkg-config pkg-config"
    "libssl-dev /usr/include/openssl/ssl.h"
    # Tests and tools of the neighbouring work: backups, HA, metrics, clock
    # and load faults, package lint, profiling. Optional: one the release
    # does not have (e.g. linux-perf on Ubuntu) is reported and left out,
    # while a missing one above stops the set-up.
    "optional"
    "barman barman"
    "patroni patroni"
    "etcd-server etcd"
    "etcd-client etcdctl"
    "prometheus promtool"
    "faketime faketime"
    "stress-ng stress-ng"
    "lintian lintian"
    "linux-perf perf"
    "python3-psycopg2 /usr/lib/python3/dist-packages/psycopg2/__init__.py"
)

missing=()
optional=()
in_optional=
for entry in "${wanted[@]}"; do
    [ "$entry" = optional ] && { in_optional=1; continue; }
    read -r package probe <<<"$entry"
    [ -n "$in_optional" ] && optional+=("$package")
    if [[ $probe == /* ]]; then
        [ -e "$probe" ] && continue
    else
        command -v "$probe" >/dev/null && continue
    fi
    missing+=("$package")
done

status=0
command -v cargo >/dev/null || {
    echo "setup: cargo not found: install the Rust toolchain (https://rustup.rs)" >&2
    status=2
}
# scripts/test.sh runs cargo clippy: a rustup toolchain may come without it.
if command -v cargo >/dev/null && ! cargo clippy --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null; then
        rustup component add clippy
    else
        echo "setup: cargo clippy not found: install clippy for this Rust toolchain" >&2
        status=2
    fi
fi
[ ${#missing[@]} -eq 0 ] && exit "$status"

echo "setup: missing: ${missing[*]}" >&2
no_cluster="mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf"
install="apt-get install -y --no-install-recommends ${missing[*]}"
if ! command -v apt-get >/dev/null; then
    echo "setup: not a Debian/Ubuntu system (no apt-get): install the equivalents of the packages above" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "setup: run 'sudo scripts/setup.sh', or these commands:" >&2
    [[ " ${missing[*]} " == *" postgresql-"* ]] && echo "sudo sh -c \"$no_cluster\"" >&2
    echo "sudo apt-get update && sudo $install" >&2
    exit 2
fi

# Only the binaries are wanted: no cluster of the package's own. This must
# be in place before postgresql-common's postinst runs.
if [[ " ${missing[*]} " == *" postgresql-"* ]] &&
    ! grep -qs '^ *create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf; then
    sh -c "$no_cluster"
fi
apt-get update
available=()
for package in "${missing[@]}"; do
    # Read whole first: with pipefail, grep -q closing the pipe early would
    # fail the pipeline.
    policy=$(apt-cache policy "$package" 2>/dev/null)
    if [[ $policy == *"Candidate: "* && $policy != *"Candidate: (none)"* ]]; then
        available+=("$package")
    elif [[ " ${optional[*]} " == *" $package "* ]]; then
        echo "setup: $package is not available from apt here; left out" >&2
    else
        echo "setup: $package is not available from apt here (for postgresql-15 on a release without it, add the PGDG repository: https://wiki.postgresql.org/wiki/Apt), then run this again" >&2
        exit 1
    fi
done
[ ${#available[@]} -eq 0 ] && exit "$status"
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${available[@]}"
echo "setup: installed ${available[*]}" >&2
exit "$status"
