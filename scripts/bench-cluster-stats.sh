#!/usr/bin/env bash
# How long `/admin/cluster-stats` takes to read the fleet from Redis, with 3 and with 50 nodes'
# snapshots in it: the server's own `read_us` (the one Redis round trip) and the whole admin call
# as curl sees it, medians over REQUESTS calls each.
#
#   scripts/bench-cluster-stats.sh [-n REQUESTS] [-b PRICEBEAST_BINARY]
#
# A redis-server of its own on a free loopback port and one pricebeast node (cluster mode on,
# publishing every second). The other nodes are simulated: copies of the real node's snapshot
# written under other names, as their publishers would write them, refreshed before each round.
# REQUESTS defaults to 200. Everything is on 127.0.0.1 and stopped on exit.
set -euo pipefail

requests=200
binary=""
usage() {
    echo "usage: $0 [-n REQUESTS] [-b PRICEBEAST_BINARY]" >&2
    exit 2
}
while getopts "n:b:h" opt; do
    case "$opt" in
        n) requests="$OPTARG" ;;
        b) binary="$OPTARG" ;;
        *) usage ;;
    esac
done
[[ "$requests" =~ ^[0-9]+$ ]] && [ "$requests" -ge 1 ] && [ "$requests" -le 10000 ] || usage

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib/bench.sh
source "$root/scripts/lib/bench.sh"

for tool in redis-server redis-cli curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "== installing redis-server, redis-tools and curl"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools curl >/dev/null
        break
    fi
done
pricebeast="$(pricebeast_binary "$root" "$binary")"

work="$(mktemp -d /tmp/bench-cluster-stats.XXXXXX)"
redis_pid=""
pb_pid=""
cleanup() {
    stop "$pb_pid"
    stop "$redis_pid"
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
redis_port="$(free_port)"
admin_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
cat >"$work/pb.toml" <<TOML
[server]
http = "127.0.0.1:0"
udp = "127.0.0.1:0"
shards = 1
node_name = "node-00"
[admin]
addr = "127.0.0.1:$admin_port"
[cluster]
redis_url = "redis://127.0.0.1:$redis_port"
stats_publish_ms = 1000
[keys]
file = "$work/keys.toml"
[usage]
store = "sqlite:$work/usage.db"
[feed.simulator]
stocks = false
TOML
"$pricebeast" serve --config "$work/pb.toml" >"$work/pb.log" 2>&1 &
pb_pid=$!
admin="http://127.0.0.1:$admin_port"
for _ in $(seq 100); do
    [ "$(redis-cli -p "$redis_port" exists cluster:stats:node-00)" = "1" ] && break
    sleep 0.1
done
snapshot="$(redis-cli -p "$redis_port" get cluster:stats:node-00)"
[ -n "$snapshot" ] || { echo "the node never published; its log:" >&2; cat "$work/pb.log" >&2; exit 1; }

# Writes simulated nodes 1..N-1 as fresh publications.
simulate() {
    local nodes="$1" now i name
    now="$(date +%s%3N)"
    redis-cli -p "$redis_port" del cluster:nodes >/dev/null
    for i in $(seq 0 $((nodes - 1))); do
        name="$(printf 'node-%02d' "$i")"
        if [ "$i" -gt 0 ]; then
            redis-cli -p "$redis_port" set "cluster:stats:$name" "$snapshot" EX 30 >/dev/null
        fi
        redis-cli -p "$redis_port" zadd cluster:nodes "$now" "$name" >/dev/null
    done
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf '%-6s %10s %14s %14s\n' nodes calls read_us_p50 call_us_p50
for nodes in 3 50; do
    simulate "$nodes"
    : >"$work/read_us"
    : >"$work/call_us"
    for _ in $(seq "$requests"); do
        curl -s -o "$work/body" -w '%{time_total}\n' "$admin/admin/cluster-stats" |
            awk '{ printf "%d\n", $1 * 1000000 }' >>"$work/call_us"
        python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); assert len(d["nodes"]) == int(sys.argv[2]), len(d["nodes"]); print(d["read_us"])' \
            "$work/body" "$nodes" >>"$work/read_us"
    done
    printf '%-6s %10s %14s %14s\n' "$nodes" "$requests" "$(median <"$work/read_us")" "$(median <"$work/call_us")"
done
echo "== one snapshot is $(printf '%s' "$snapshot" | wc -c) bytes"
