#!/usr/bin/env bash
# Make PostgreSQL server binaries (initdb, pg_ctl, postgres) available for the test suite.
#
# Idempotent: when initdb is already on PATH or under /usr/lib/postgresql/*/bin nothing is
# installed; otherwise Debian's `postgresql` package is installed with apt-get. The Debian
# cluster service is NOT started: the tests start their own throw-away servers
# (tests/postgres_fixture.py). Ensures the `postgres` OS user exists, since the server
# refuses to run as root. Prints the version found; exits non-zero on failure.
set -euo pipefail

find_initdb() {
    local candidate
    if candidate="$(command -v initdb 2>/dev/null)" && [ -x "$candidate" ]; then
        echo "$candidate"
        return 0
    fi
    # Highest major version first.
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        if [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ]; then
            echo "$candidate/initdb"
            return 0
        fi
    done
    return 1
}

if initdb_path="$(find_initdb)"; then
    echo "install-postgres: found $initdb_path (nothing to install)"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-postgres: PostgreSQL is missing and installing it needs root" >&2
        exit 1
    fi
    echo "install-postgres: PostgreSQL not found; installing with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package's maintainer scripts from starting the Debian cluster service.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    cleanup() { if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi; }
    trap cleanup EXIT
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    # In case a service manager started the packaged cluster anyway, stop it: we run our own.
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        for conf in /etc/postgresql/*/*; do
            [ -d "$conf" ] || continue
            pg_ctlcluster "$(basename "$(dirname "$conf")")" "$(basename "$conf")" stop \
                >/dev/null 2>&1 || true
        done
    fi
    if ! initdb_path="$(find_initdb)"; then
        echo "install-postgres: apt-get finished but initdb is still not found" >&2
        exit 1
    fi
    echo "install-postgres: installed $initdb_path"
fi

if ! id -u postgres >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-postgres: the 'postgres' OS user is missing and creating it needs root" >&2
        exit 1
    fi
    echo "install-postgres: creating the 'postgres' OS user"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

bin_dir="$(dirname "$(readlink -f "$initdb_path")")"
for tool in initdb pg_ctl postgres; do
    if [ ! -x "$bin_dir/$tool" ]; then
        echo "install-postgres: $bin_dir/$tool is missing" >&2
        exit 1
    fi
done
echo "install-postgres: $("$bin_dir/postgres" --version) in $bin_dir"
