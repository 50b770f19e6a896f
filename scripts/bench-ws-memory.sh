#!/usr/bin/env bash
# pricebeast's memory per idle WebSocket stream: the server's resident memory (VmRSS) before any
# stream and while N streams are open, each subscribed to one symbol.
#
#   scripts/bench-ws-memory.sh [-n STREAMS] [-r RAMP_SECONDS] [-H HOLD_SECONDS] [-i DRIVER] [-p ws|sse]
#
# -p sse: the streams are server-sent event streams (`Accept: text/event-stream`) instead of
# WebSockets; the same sessions, the same gauge.
#
# STREAMS defaults to 10000. The streams come from pricebeast's own stress client, running a plan
# written for the occasion: one stage ramping to STREAMS users over RAMP_SECONDS (default 20), a
# hold of HOLD_SECONDS (default 20); each user makes one session for BTC-USD and holds its stream
# to the end. Once the server's open_websocket_sessions gauge reads STREAMS, the server's VmRSS is
# sampled once a second during the hold; the median is "after". Printed: RSS before, after, the
# delta and delta/STREAMS in bytes per stream, against the target (8 KiB) and the goal (4 KiB).
#
# VmRSS is the server's user-space memory only: each stream's kernel socket buffers are not in it
# (the kernel charges them to the socket, and an idle stream's queues are nearly empty). The
# stress client's own RSS is printed beside it, for scale.
#
# The server runs on 127.0.0.1 with a temporary config and a partner key; the stress client checks
# that every stream and session is gone after the run (the gauges back to 0) and this script reads
# them once more. Everything is bounded in time and stopped on exit. Each process here may open at
# most 20,000 files, so STREAMS is at most 18,000.
set -euo pipefail

streams=10000
ramp_s=20
hold_s=20
io_driver=""
protocol="ws"
usage() {
    echo "usage: $0 [-n STREAMS] [-r RAMP_SECONDS] [-H HOLD_SECONDS] [-i auto|io_uring|epoll] [-p ws|sse]" >&2
    exit 2
}
while getopts "n:r:H:i:p:h" opt; do
    case "$opt" in
        n) streams="$OPTARG" ;;
        r) ramp_s="$OPTARG" ;;
        H) hold_s="$OPTARG" ;;
        i) io_driver="$OPTARG" ;;
        p) protocol="$OPTARG" ;;
        *) usage ;;
    esac
done
case "$protocol" in ws | sse) ;; *) usage ;; esac
case "$io_driver" in "" | auto | io_uring | epoll) ;; *) usage ;; esac
for n in "$streams" "$ramp_s" "$hold_s"; do
    [[ "$n" =~ ^[0-9]+$ ]] || usage
done
# Bounds: the open-file limit (20,000 per process here) and at most 20 minutes of load.
if [ "$streams" -lt 1 ] || [ "$streams" -gt 18000 ] || [ "$ramp_s" -lt 1 ] || [ "$ramp_s" -gt 600 ] ||
    [ "$hold_s" -lt 5 ] || [ "$hold_s" -gt 600 ]; then
    usage
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib/bench.sh
source "$root/scripts/lib/bench.sh"

# --- tools ---------------------------------------------------------------------------------------
if ! command -v curl >/dev/null 2>&1; then
    echo "== installing curl"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi

# --- build ---------------------------------------------------------------------------------------
pricebeast="$(build_pricebeast "$root")"

work="$(mktemp -d /tmp/bench-ws-memory.XXXXXX)"
pb_pid=""
stress_pid=""
cleanup() {
    stop "$stress_pid"
    stop "$pb_pid"
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A process's resident memory in KiB.
rss_kib() {
    awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"
}
# One gauge of /admin/stress-stats ("" when the admin listener does not answer).
gauge() {
    curl -sf --max-time 2 "http://127.0.0.1:$admin_port/admin/stress-stats" |
        grep -o "\"$1\":-\?[0-9]*" | head -1 | cut -d: -f2 || true
}

# --- pricebeast ----------------------------------------------------------------------------------
key="$("$pricebeast" keys new --tier partner --name bench-ws-memory --keys-file "$work/keys.toml")"
cat >"$work/pricebeast.toml" <<EOF
[server]
http = "127.0.0.1:0"
udp = "127.0.0.1:0"

[admin]
addr = "127.0.0.1:0"

[keys]
file = "$work/keys.toml"

[log]
level = "warn,pricebeast::server=info"
EOF
driver_flag=()
[ -z "$io_driver" ] || driver_flag=(--io-driver "$io_driver")
echo "== starting pricebeast serve ${driver_flag[*]}"
"$pricebeast" serve --config "$work/pricebeast.toml" "${driver_flag[@]}" >"$work/pricebeast.log" 2>&1 &
pb_pid=$!
http_port=""
admin_port=""
for _ in $(seq 200); do
    http_port="$(grep -o 'listening http=127\.0\.0\.1:[0-9]*' "$work/pricebeast.log" | head -1 | cut -d: -f2 || true)"
    admin_port="$(grep -o ' admin=127\.0\.0\.1:[0-9]*' "$work/pricebeast.log" | head -1 | cut -d: -f2 || true)"
    [ -n "$http_port" ] && [ -n "$admin_port" ] && break
    kill -0 "$pb_pid" 2>/dev/null || { cat "$work/pricebeast.log" >&2; exit 1; }
    sleep 0.1
done
if [ -z "$http_port" ] || [ -z "$admin_port" ]; then
    echo "pricebeast did not report its ports" >&2
    cat "$work/pricebeast.log" >&2
    exit 1
fi
for _ in $(seq 200); do
    [ "$(curl -s --max-time 2 "http://127.0.0.1:$http_port/ready" || true)" = ready ] && break
    sleep 0.1
done
[ "$(curl -s --max-time 2 "http://127.0.0.1:$http_port/ready" || true)" = ready ] || { echo "pricebeast never got ready" >&2; exit 1; }
echo "== pricebeast (pid $pb_pid) ready on 127.0.0.1:$http_port, admin 127.0.0.1:$admin_port, open-file limit $(awk '$1 == "Max" && $2 == "open" { print $4 }' "/proc/$pb_pid/limits")"

# Settle: the first seconds allocate the book, buffers and the simulator's state.
sleep 2
before_kib="$(rss_kib "$pb_pid")"
echo "== server RSS before: $before_kib KiB"

# --- streams -------------------------------------------------------------------------------------
cat >"$work/plan.toml" <<EOF
# Generated by scripts/bench-ws-memory.sh: $streams idle streams of one symbol each.
protocol = "$protocol"
timeout_ms = 10000

[mix]
symbols = ["BTC-USD"]
tier = "partner"

[user]
symbols_min = 1
symbols_max = 1

[[stages]] # ramp
users = $streams
over_s = $ramp_s

[[stages]] # hold, then everyone leaves at the end
users = $streams
over_s = $hold_s
EOF
echo "== opening $streams streams over ${ramp_s}s, holding ${hold_s}s"
timeout "$((ramp_s + hold_s + 90))" "$pricebeast" stress --plan "$work/plan.toml" --target "127.0.0.1:$http_port" \
    --key "$key" --admin "127.0.0.1:$admin_port" --out "$work/out" >"$work/stress.out" 2>"$work/stress.err" &
stress_pid=$!

# Wait until every stream is open (the ramp, and a little more for the last upgrades).
open=""
deadline=$((SECONDS + ramp_s + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
    open="$(gauge open_websocket_sessions)"
    [ "${open:-0}" -ge "$streams" ] && break
    kill -0 "$stress_pid" 2>/dev/null || break
    sleep 0.5
done
if [ "${open:-0}" -lt "$streams" ]; then
    echo "only ${open:-no} of $streams streams open on the server after the ramp" >&2
    cat "$work/stress.out" "$work/stress.err" >&2
    exit 1
fi
echo "== all $streams streams open; sampling RSS during the hold"
samples=()
client_kib=""
end_of_hold=$((SECONDS + hold_s / 2))
while [ "$SECONDS" -lt "$end_of_hold" ]; do
    [ "$(gauge open_websocket_sessions)" = "$streams" ] || break
    samples+=("$(rss_kib "$pb_pid")")
    # The stress client is timeout's child.
    client_pid="$(pgrep -P "$stress_pid" | head -1 || true)"
    [ -z "$client_pid" ] || client_kib="$(rss_kib "$client_pid" || true)"
    sleep 1
done
[ "${#samples[@]}" -gt 0 ] || { echo "no RSS sample while every stream was open" >&2; exit 1; }
after_kib="$(printf '%s\n' "${samples[@]}" | median)"
max_kib="$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)"

# --- the end -------------------------------------------------------------------------------------
stress_status=0
wait "$stress_pid" || stress_status=$?
stress_pid=""
sed -n '/^stage /,$p' "$work/stress.out"
open_after="$(gauge open_websocket_sessions)"
pending_after="$(gauge pending_sessions)"

echo
echo "== server memory with $streams idle streams (1 symbol each), ${#samples[@]} samples during the hold"
awk -v b="$before_kib" -v a="$after_kib" -v m="$max_kib" -v n="$streams" -v c="${client_kib:-0}" 'BEGIN {
    d = (a - b) * 1024; per = d / n
    printf "RSS before:  %8.1f MiB\n", b / 1024
    printf "RSS after:   %8.1f MiB (median; max %.1f MiB)\n", a / 1024, m / 1024
    printf "delta:       %8.1f MiB\n", d / 1048576
    printf "per stream:  %8.0f bytes   target 8192: %s   goal 4096: %s\n", per,
        (per <= 8192 ? "met" : "NOT met"), (per <= 4096 ? "met" : "not met")
    printf "client RSS:  %8.1f MiB (the stress client, %.0f bytes per stream, for scale)\n", c / 1024, c * 1024 / n
}'
echo "gauges after the run: open_websocket_sessions=${open_after:-?} pending_sessions=${pending_after:-?}"
status=0
if [ "$stress_status" -ne 0 ]; then
    echo "the stress client exited $stress_status (2: a threshold, including the gauges' return to 0)" >&2
    tail -5 "$work/stress.err" >&2
    status=1
fi
if [ "${open_after:-x}" != 0 ] || [ "${pending_after:-x}" != 0 ]; then
    echo "the stream gauges did not return to 0" >&2
    status=1
fi
exit "$status"
