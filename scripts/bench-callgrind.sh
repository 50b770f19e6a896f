#!/usr/bin/env bash
# Instructions per HTTP request (or UDP query) on a shard's thread, counted by callgrind: a figure
# that does not move with the machine's noise, so two builds can be compared exactly.
#
#   scripts/bench-callgrind.sh [-b PRICEBEAST_BINARY] [-i epoll|io_uring] [-d SECONDS] [-c CONNECTIONS]
#                              [-p http|udp] [-r UDP_RATE]
#   KEEP_DUMP=/tmp/shard.cg scripts/bench-callgrind.sh ...   # also keep the shard's dump
#
# -p udp: instead of wrk, the built-in stress client sends partner UDP price queries at UDP_RATE
# a second (default 2000, open loop), and the divisor is the server's udp_requests.
#
# pricebeast runs under `valgrind --tool=callgrind --separate-threads=yes` with one shard; wrk
# sends keep-alive `GET /v1/price?symbol=BTC-USD` for SECONDS (default 5) over CONNECTIONS
# (default 4) to 127.0.0.1. Counters are zeroed just before the load and dumped just after it
# (callgrind_control), and the busiest thread of the dump (the shard) is divided by the requests
# the server counted (tcp_requests from /admin/stress-stats). Printed: that thread's instructions
# per request. User-space instructions only: the kernel's share of a request is not in it (see
# scripts/bench-http.sh for whole CPU time). The default driver is epoll: valgrind does not see
# what the kernel does inside io_uring's shared rings, so io_uring figures are less complete.
# valgrind's CPU has no SHA extensions, so the key's SHA-256 runs in software here (about 3,500
# of a request's instructions) where the real CPU uses SHA-NI: compare builds, not absolutes.
set -euo pipefail

binary=""
io_driver="epoll"
duration_s=5
connections=4
protocol="http"
udp_rate=2000
usage() {
    echo "usage: $0 [-b BINARY] [-i epoll|io_uring] [-d SECONDS] [-c CONNECTIONS] [-p http|udp] [-r UDP_RATE]" >&2
    exit 2
}
while getopts "b:i:d:c:p:r:h" opt; do
    case "$opt" in
        b) binary="$OPTARG" ;;
        i) io_driver="$OPTARG" ;;
        d) duration_s="$OPTARG" ;;
        c) connections="$OPTARG" ;;
        p) protocol="$OPTARG" ;;
        r) udp_rate="$OPTARG" ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -eq 0 ] || usage
case "$io_driver" in epoll | io_uring) ;; *) usage ;; esac
case "$protocol" in http | udp) ;; *) usage ;; esac
for n in "$duration_s" "$connections" "$udp_rate"; do
    [[ "$n" =~ ^[0-9]+$ ]] || usage
done
if [ "$duration_s" -lt 1 ] || [ "$duration_s" -gt 120 ] || [ "$connections" -lt 1 ] || [ "$connections" -gt 256 ] ||
    [ "$udp_rate" -lt 1 ] || [ "$udp_rate" -gt 100000 ]; then
    usage
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib/bench.sh
source "$root/scripts/lib/bench.sh"

need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

pricebeast="$(pricebeast_binary "$root" "$binary")"

work="$(mktemp -d /tmp/bench-callgrind.XXXXXX)"
pb_pid=""
cleanup() {
    stop "$pb_pid"
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

key="$("$pricebeast" keys new --tier partner --name bench-callgrind --keys-file "$work/keys.toml")"
echo "== starting $pricebeast under callgrind (1 shard, $io_driver)"
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$work/cg.out" \
    "$pricebeast" serve --shards 1 --io-driver "$io_driver" --keys-file "$work/keys.toml" \
    --http 127.0.0.1:0 --udp 127.0.0.1:0 --admin 127.0.0.1:0 >"$work/pricebeast.log" 2>&1 &
pb_pid=$!
http_port=""
udp_port=""
admin_port=""
for _ in $(seq 600); do
    line="$(grep -o 'listening http=127\.0\.0\.1:[0-9]* .*admin=127\.0\.0\.1:[0-9]*' "$work/pricebeast.log" | head -1 || true)"
    if [ -n "$line" ]; then
        http_port="$(grep -o 'http=127\.0\.0\.1:[0-9]*' <<<"$line" | cut -d: -f2)"
        udp_port="$(grep -o 'udp=127\.0\.0\.1:[0-9]*' <<<"$line" | cut -d: -f2)"
        admin_port="$(grep -o 'admin=127\.0\.0\.1:[0-9]*' <<<"$line" | cut -d: -f2)"
        break
    fi
    kill -0 "$pb_pid" 2>/dev/null || { cat "$work/pricebeast.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$http_port" ] || { echo "pricebeast did not report its ports" >&2; exit 1; }
url="http://127.0.0.1:$http_port/v1/price?symbol=BTC-USD"
for _ in $(seq 300); do
    curl -sf --max-time 5 -o /dev/null -H "X-API-Key: $key" "$url" && break
    sleep 0.2
done
curl -sf --max-time 5 -o /dev/null -H "X-API-Key: $key" "$url" || { echo "pricebeast never served $url" >&2; exit 1; }

counter="tcp_requests"
[ "$protocol" = udp ] && counter="udp_requests"
requests_served() {
    curl -sf --max-time 10 "http://127.0.0.1:$admin_port/admin/stress-stats" | grep -o "\"$counter\":[0-9]*" | head -1 | cut -d: -f2
}

# One load of SECONDS: wrk's keep-alive requests, or the stress client's UDP queries at a fixed rate.
load() {
    local seconds="$1" out="$2"
    if [ "$protocol" = http ]; then
        wrk -t1 -c"$connections" -d"${seconds}s" --timeout 10s -H "X-API-Key: $key" "$url" >"$out"
        return
    fi
    cat >"$work/udp.toml" <<PLAN
protocol = "udp"
warmup_pct = 0
timeout_ms = 5000
[mix]
symbols = ["BTC-USD"]
[[levels]]
concurrency = 1
rate_per_s = $udp_rate
duration_ms = $((seconds * 1000))
PLAN
    # Its thresholds are not the point here; a lost datagram is simply not counted by the server.
    "$pricebeast" stress --plan "$work/udp.toml" --target "127.0.0.1:$udp_port" --key "$key" --workers 1 >"$out" 2>&1 || true
}

# Warm-up (buffers into the pools, caches), then counters zeroed and the measured load.
load 2 /dev/null
before="$(requests_served)"
callgrind_control -z "$pb_pid" >/dev/null 2>&1
load "$duration_s" "$work/load.out"
callgrind_control -d "$pb_pid" >/dev/null 2>&1
after="$(requests_served)"
requests=$((after - before))
[ "$requests" -gt 0 ] || { echo "no request counted" >&2; exit 1; }

# The dump writes one file per thread; the shard's is the busiest of those that ran the shard's
# code, its request handling (at a low request rate the simulator's thread is busier).
shard_files=()
for file in "$work"/cg.out*; do
    [ -f "$file" ] && grep -qE 'pricebeast::(admission|keys|udp|http)::' "$file" && shard_files+=("$file")
done
[ "${#shard_files[@]}" -gt 0 ] || shard_files=("$work"/cg.out*)
busiest=0
busiest_file=""
for file in "${shard_files[@]}"; do
    [ -f "$file" ] || continue
    ir="$(awk '/^summary:/ { print $2 }' "$file")"
    if [ -n "$ir" ] && [ "$ir" -gt "$busiest" ]; then
        busiest="$ir"
        busiest_file="$file"
    fi
done
[ "$busiest" -gt 0 ] || { echo "no callgrind dump found" >&2; exit 1; }
if [ "$protocol" = http ]; then
    echo "== $requests requests (server's tcp_requests) over $connections connections in ${duration_s}s"
else
    echo "== $requests UDP queries (server's udp_requests) at $udp_rate/s offered in ${duration_s}s"
fi
awk -v ir="$busiest" -v n="$requests" 'BEGIN { printf "shard thread: %d instructions, %.0f per request\n", ir, ir / n }'
if [ -n "${KEEP_DUMP:-}" ]; then
    # KEEP_DUMP=FILE keeps the shard thread's dump, for callgrind_annotate.
    cp "$busiest_file" "$KEEP_DUMP"
    echo "shard thread's dump: $KEEP_DUMP (callgrind_annotate $KEEP_DUMP)"
fi
