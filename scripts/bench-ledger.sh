#!/usr/bin/env bash
# The usage ledger's write throughput with 10,000 active keys, into SQLite and into PostgreSQL
# (benches/ledger_flush.rs): one flush window carries 1,000,000 counted requests in 10,000 rows,
# and criterion's throughput line is counted requests per second end to end (target: at least
# 1,000,000/s). PostgreSQL is a throwaway cluster made here with initdb (Debian's postgresql,
# installed when missing), run as an unprivileged user on a free 127.0.0.1 port with fsync on,
# and removed on exit. Setup: the bench and PostgreSQL share both cores ("shared").
#
#   scripts/bench-ledger.sh [-s SAMPLES]     # SAMPLES: criterion samples per bench (default 20)
set -euo pipefail

samples=20
usage() {
    echo "usage: $0 [-s SAMPLES]" >&2
    exit 2
}
while getopts "s:h" opt; do
    case "$opt" in
        s) samples="$OPTARG" ;;
        *) usage ;;
    esac
done
if ! [[ "$samples" =~ ^[0-9]+$ ]] || [ "$samples" -lt 10 ] || [ "$samples" -gt 1000 ]; then
    usage
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
newest_pg_bin() { find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -1; }
pg_bin="$(newest_pg_bin)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "== installing postgresql (programs only: no cluster of the package's own)"
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/pricebeast-tests.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    pg_bin="$(newest_pg_bin)"
fi
pg_user=postgres
id "$pg_user" >/dev/null 2>&1 || pg_user=nobody
as_pg() { setpriv --reuid="$pg_user" --regid="$(id -g "$pg_user")" --clear-groups -- "$@"; }

work="$(mktemp -d /tmp/bench-ledger.XXXXXX)"
chown "$pg_user" "$work"
pg_pid=""
cleanup() {
    if [ -n "$pg_pid" ]; then
        kill -INT "$pg_pid" 2>/dev/null || true
        wait "$pg_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg "$pg_bin/initdb" -D "$work/data" -U bench --auth=trust -E UTF8 >"$work/initdb.log" 2>&1 ||
    { cat "$work/initdb.log" >&2; exit 1; }
as_pg "$pg_bin/postgres" -D "$work/data" -h 127.0.0.1 -p "$port" -k "$work" >"$work/postgres.log" 2>&1 &
pg_pid=$!
for _ in $(seq 100); do
    if as_pg "$pg_bin/psql" -h 127.0.0.1 -p "$port" -U bench -d postgres -qAtc 'SELECT 1' >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
as_pg "$pg_bin/psql" -h 127.0.0.1 -p "$port" -U bench -d postgres -qc 'CREATE DATABASE usage' ||
    { cat "$work/postgres.log" >&2; exit 1; }
echo "== PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (fsync on)"

cd "$root"
PRICEBEAST_BENCH_POSTGRES="postgres://bench@127.0.0.1:$port/usage" \
    cargo bench --locked --bench ledger_flush -- --sample-size "$samples" 2>&1 |
    grep -E '^ledger_flush/|time:|thrpt:'
