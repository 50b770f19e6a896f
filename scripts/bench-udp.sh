#!/usr/bin/env bash
# pricebeast's UDP path against the kernel-path floor, under the same load, in the same run
# (a figure is a ratio against a reference measured beside it).
#
# The floor is scripts/bench-udp/responder.c: one thread, one socket, recvmmsg(2) a batch (as many
# as pricebeast's udp.batch_max), write each answer pricebeast would write for the query (same
# length: request id, fixed price fields, the symbol echoed), sendmmsg(2) the batch. No key lookup,
# no book read: whatever pricebeast spends above it is its own code. Both get the same open-loop
# load from scripts/bench-udp/load.c: 64-byte BTC-USD price queries with a partner key at a fixed
# rate, answers counted by request id. Each server gets one core (pricebeast --shards 1, all its
# threads pinned to core 0 where there are two, like the responder) and the load the other
# (core 1). Rounds alternate the servers; each run measures the server's CPU time from
# /proc/PID/stat per answered query.
#
#   scripts/bench-udp.sh [-d SECONDS] [-r ROUNDS] [-q RATE] [-c SOCKETS] [-w WARMUP_SECONDS] [-i DRIVER]
#                        [-b PRICEBEAST_BINARY]
#
# -b runs a given binary instead of building this checkout (to compare an old build with a new one).
# RATE is queries per second (default 150000), SOCKETS the load's client sockets (default 4),
# DRIVER pricebeast's shard io driver (auto, io_uring, epoll; default: the config's, auto).
#
# The load is open loop: query i goes out at start + i/RATE whatever the server does, in bursts
# every 100 us, from SOCKETS client ports. The rate is meant to saturate neither server (nor the
# load), so both answer everything and the comparison is CPU per answer; at such a rate the
# throughput ratio is 1.00 less the difference in loss, and says more only when a server
# saturates. A "lost" query got no answer within the run plus 300 ms. The load reports its own
# CPU, its late sends and the answers dropped at its own sockets; a run where it sent less than
# 99% of the queries due fails the benchmark (its figures would describe the load, not the server).
#
# Columns: answers/s = answered / SECONDS; loss = unanswered / sent; ldrops = answers the kernel
# dropped at the load's own sockets (part of loss, not the server's doing); us/answer = the
# server's CPU (all its threads, user + system) per answer; user = the share of it in user space;
# shard_us = pricebeast's shard thread alone (without its price simulator); load_cpu = the load's
# CPU on its core; late = queries sent more than 1 ms after they were due (the load thread was
# stalled; the server then got a bigger burst); kept = the load sent >= 99% of what was due;
# other = CPU the rest of the machine used during the run, in % of one core (another build or
# test sharing the cores makes every figure noisy).
#
# Prints a table per round, the medians, and two ratios: pricebeast/floor answers per second
# (target >= 0.8), floor/pricebeast CPU per answer (target >= 0.8, i.e. at most 1.25x the floor's
# CPU; > 1 means pricebeast uses less). Every load is aimed at 127.0.0.1 and bounded in time; both
# servers are stopped on exit.
set -euo pipefail

duration_s=8
rounds=3
rate=150000
sockets=4
warmup_s=2
io_driver=""
usage() {
    echo "usage: $0 [-d SECONDS] [-r ROUNDS] [-q RATE] [-c SOCKETS] [-w WARMUP_SECONDS] [-i auto|io_uring|epoll] [-b BINARY]" >&2
    exit 2
}
binary=""
while getopts "d:r:q:c:w:i:b:h" opt; do
    case "$opt" in
        d) duration_s="$OPTARG" ;;
        r) rounds="$OPTARG" ;;
        q) rate="$OPTARG" ;;
        c) sockets="$OPTARG" ;;
        w) warmup_s="$OPTARG" ;;
        i) io_driver="$OPTARG" ;;
        b) binary="$OPTARG" ;;
        *) usage ;;
    esac
done
case "$io_driver" in "" | auto | io_uring | epoll) ;; *) usage ;; esac
for n in "$duration_s" "$rounds" "$rate" "$sockets" "$warmup_s"; do
    [[ "$n" =~ ^[0-9]+$ ]] || usage
done
# Bounds: a run is at most 10 minutes of load at 2 million queries per second, from 64 sockets.
if [ "$duration_s" -lt 1 ] || [ "$duration_s" -gt 600 ] || [ "$rounds" -lt 1 ] || [ "$rounds" -gt 20 ] ||
    [ "$rate" -lt 1000 ] || [ "$rate" -gt 2000000 ] || [ "$sockets" -lt 1 ] || [ "$sockets" -gt 64 ] ||
    [ "$warmup_s" -gt 60 ]; then
    usage
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib/bench.sh
source "$root/scripts/lib/bench.sh"
symbol="BTC-USD"

# --- tools ---------------------------------------------------------------------------------------
need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cores="$(nproc)"
if [ "$cores" -ge 2 ]; then
    server_cpu=(taskset -c 0)
    load_cpu=(taskset -c 1)
else
    server_cpu=()
    load_cpu=()
fi

# pricebeast's own UDP settings (the defaults it runs with below), so the floor batches and buffers
# exactly as it does.
udp_setting() {
    awk -v k="$1" '/^\[/ { in_udp = ($0 == "[udp]") } in_udp && $1 == k && $2 == "=" { print $3; exit }' \
        "$root/config/pricebeast.toml"
}
batch_max="$(udp_setting batch_max)"
socket_buffer_bytes="$(udp_setting socket_buffer_bytes)"
[[ "$batch_max" =~ ^[0-9]+$ ]] || batch_max=32
[[ "$socket_buffer_bytes" =~ ^[0-9]+$ ]] || socket_buffer_bytes=4194304

# --- build ---------------------------------------------------------------------------------------
pricebeast="$(pricebeast_binary "$root" "$binary")"

work="$(mktemp -d /tmp/bench-udp.XXXXXX)"
pb_pid=""
floor_pid=""
cleanup() {
    stop "$pb_pid"
    stop "$floor_pid"
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== compiling scripts/bench-udp/{responder,load}.c"
for prog in responder load; do
    gcc -O2 -Wall -Wextra -o "$work/$prog" "$root/scripts/bench-udp/$prog.c"
done

# Busy jiffies of the whole machine (every CPU, everything but idle and iowait).
machine_busy() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}
hz="$(getconf CLK_TCK)"

# Asks a UDP server for BTC-USD with pricebeast's own client; prints its JSON answer.
query() {
    timeout 5 "$pricebeast" query --udp "127.0.0.1:$1" --key "$key" --timeout-ms 500 "$symbol" 2>/dev/null
}
# Waits for "listening ...:PORT" in a log; prints PORT.
wait_port() {
    local pid="$1" log="$2" pattern="$3" port=""
    for _ in $(seq 100); do
        port="$(grep -o "${pattern}[0-9]*" "$log" | head -1 | sed 's/.*://' || true)"
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; return 1; }
        sleep 0.1
    done
    [ -n "$port" ] || { echo "no port in $log" >&2; cat "$log" >&2; return 1; }
    echo "$port"
}

# --- pricebeast ----------------------------------------------------------------------------------
key="$("$pricebeast" keys new --tier partner --name bench-udp --keys-file "$work/keys.toml")"
driver_flag=()
[ -z "$io_driver" ] || driver_flag=(--io-driver "$io_driver")
echo "== starting pricebeast --shards 1 ${driver_flag[*]}"
"${server_cpu[@]}" "$pricebeast" serve --shards 1 "${driver_flag[@]}" --keys-file "$work/keys.toml" \
    --http 127.0.0.1:0 --udp 127.0.0.1:0 --admin 127.0.0.1:0 >"$work/pricebeast.log" 2>&1 &
pb_pid=$!
pb_port="$(wait_port "$pb_pid" "$work/pricebeast.log" 'listening .*udp=127\.0\.0\.1:')"
# The simulator needs a tick before BTC-USD has a fresh price; until then the status is "stale".
pb_answer=""
for _ in $(seq 100); do
    pb_answer="$(query "$pb_port" || true)"
    [[ "$pb_answer" == *'"status":"ok"'* ]] && break
    sleep 0.1
done
[[ "$pb_answer" == *'"status":"ok"'* ]] || { echo "pricebeast never priced $symbol over UDP: $pb_answer" >&2; exit 1; }
pb_driver="$(grep -o 'driver="*[a-z_]*' "$work/pricebeast.log" | head -1 | sed 's/driver="*//' || true)"
shard_tid=""
for task in /proc/"$pb_pid"/task/*; do
    if [ "$(cat "$task/comm")" = shard-0 ]; then shard_tid="${task##*/}"; fi
done
[ -n "$shard_tid" ] || { echo "pricebeast has no shard-0 thread" >&2; exit 1; }
echo "== pricebeast serving UDP on 127.0.0.1:$pb_port, shard io driver: ${pb_driver:-unknown}"

# --- the floor -----------------------------------------------------------------------------------
echo "== starting the floor responder (batch $batch_max, socket buffers $socket_buffer_bytes bytes)"
"${server_cpu[@]}" "$work/responder" -b "$batch_max" -s "$socket_buffer_bytes" >"$work/responder.log" 2>&1 &
floor_pid=$!
floor_port="$(wait_port "$floor_pid" "$work/responder.log" 'listening 127\.0\.0\.1:')"
floor_answer="$(query "$floor_port" || true)"
[[ "$floor_answer" == *'"status":"ok"'* ]] || { echo "the floor responder did not answer: $floor_answer" >&2; exit 1; }
echo "pricebeast answer: $pb_answer"
echo "floor answer:      $floor_answer"
# Same length by construction (29 + symbol); the load checks every answer's length as well.

# --- load ----------------------------------------------------------------------------------------
pb_stat="/proc/$pb_pid/stat"
shard_stat="/proc/$pb_pid/task/$shard_tid/stat"
floor_stat="/proc/$floor_pid/stat"
# One load run against SERVER (pricebeast or floor) for SECONDS. Prints
# "sent answered answers_per_s loss_pct load_drops cpu_us_per_answer user_pct shard_us_per_answer
#  load_cpu_pct late_pct rate_kept wrong other_pct": load_drops are the lost answers the kernel
# dropped at the load's own full sockets (not the server's doing); shard_us is pricebeast's shard
# thread alone ("-" for the floor); other_pct is what the rest of the machine used meanwhile
# (neither server nor the load), in % of one core: more than a few % means another build or test
# shared the cores.
run_load() {
    local server="$1" seconds="$2" port before after out
    if [ "$server" = pricebeast ]; then port="$pb_port"; else port="$floor_port"; fi
    before="$(cpu_ticks "$pb_stat") $(cpu_ticks "$shard_stat") $(cpu_ticks "$floor_stat") $(machine_busy)"
    out="$("${load_cpu[@]}" "$work/load" -p "$port" -k "$key" -y "$symbol" -q "$rate" -d "$seconds" \
        -c "$sockets" -b "$batch_max")"
    after="$(cpu_ticks "$pb_stat") $(cpu_ticks "$shard_stat") $(cpu_ticks "$floor_stat") $(machine_busy)"
    awk -v server="$server" -v s="$seconds" -v hz="$hz" -v before="$before" -v after="$after" '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        # before/after: pricebeast total user, shard total user, floor total user, machine busy.
        split(before, b, " "); split(after, e, " ")
        pb = e[1] - b[1]; shard = e[3] - b[3]; floor = e[5] - b[5]; machine = e[7] - b[7]
        if (server == "pricebeast") { t = pb; u = e[2] - b[2] } else { t = floor; u = e[6] - b[6] }
        other = machine - pb - floor - v["cpu_total_ms"] * hz / 1000
        a = v["answered"]; n = v["sent"]
        printf "%d %d %.0f %.3f %d %.3f %.0f %s %.1f %.2f %d %d %.0f\n", n, a, a / s,
            (n > 0 ? 100 * v["lost"] / n : 0), v["load_drops"], (a > 0 ? t * 1e6 / hz / a : 0),
            (t > 0 ? 100 * u / t : 0),
            (server == "pricebeast" && a > 0 ? sprintf("%.3f", shard * 1e6 / hz / a) : "-"),
            v["cpu_pct"], (n > 0 ? 100 * v["late"] / n : 0), v["rate_kept"],
            v["bad"] + v["dup"] + v["not_ok"], (other > 0 ? 100 * other / hz / s : 0)
    }' <<<"$out"
}

if [ "$warmup_s" -gt 0 ]; then
    echo "== warm-up: ${warmup_s}s each"
    run_load pricebeast "$warmup_s" >/dev/null
    run_load floor "$warmup_s" >/dev/null
fi

# What each server burns with no load (pricebeast's simulator feed and stats): it is inside every
# CPU-per-answer figure below, so it is shown. So is what the rest of the machine did meanwhile.
idle_s=2
before="$(cpu_ticks "$pb_stat") $(cpu_ticks "$floor_stat") $(machine_busy)"
sleep "$idle_s"
after="$(cpu_ticks "$pb_stat") $(cpu_ticks "$floor_stat") $(machine_busy)"
awk -v before="$before" -v after="$after" -v s="$idle_s" -v hz="$hz" 'BEGIN {
    split(before, b, " "); split(after, e, " ")
    p = e[1] - b[1]; f = e[3] - b[3]; o = e[5] - b[5] - p - f
    printf "== idle CPU: pricebeast %.1f ms/s, floor %.1f ms/s; rest of the machine %.1f ms/s\n",
        p * 1000 / hz / s, f * 1000 / hz / s, o * 1000 / hz / s
}'

echo "== load: $rate queries/s of $symbol from $sockets sockets, ${duration_s}s per run, $rounds rounds"
results="$work/results"
: >"$results"
printf '%-5s %-10s %9s %9s %9s %7s %6s %9s %5s %9s %8s %6s %4s %6s\n' round server sent answered \
    answers/s loss ldrops us/answer user shard_us load_cpu late kept other
for round in $(seq "$rounds"); do
    # Alternate who goes first, so a drift in the machine's state does not favour one side.
    if [ $((round % 2)) -eq 1 ]; then order="pricebeast floor"; else order="floor pricebeast"; fi
    for server in $order; do
        read -r sent answered rps loss ldrops cpu user shard load late kept wrong other \
            < <(run_load "$server" "$duration_s")
        printf '%-5s %-10s %9s %9s %9s %6s%% %6s %9s %4s%% %9s %7s%% %5s%% %4s %5s%%\n' "$round" "$server" \
            "$sent" "$answered" "$rps" "$loss" "$ldrops" "$cpu" "$user" "$shard" "$load" "$late" \
            "$([ "$kept" = 1 ] && echo yes || echo NO)" "$other"
        echo "$server $rps $cpu $loss $kept $wrong $other $shard" >>"$results"
    done
done

# A run during which the rest of the machine used more than 10% of a core (a build or a test run
# on a shared machine) measured the neighbours as much as the server. The medians leave such runs
# out when each server has at least one quiet run, and say so; otherwise they take every run.
noisy_pct=10
quiet_pb="$(awk -v n="$noisy_pct" '$1 == "pricebeast" && $7 <= n' "$results" | wc -l)"
quiet_fl="$(awk -v n="$noisy_pct" '$1 == "floor" && $7 <= n' "$results" | wc -l)"
noisy_runs="$(awk -v n="$noisy_pct" '$7 > n { c++ } END { print c + 0 }' "$results")"
if [ "$noisy_runs" -gt 0 ] && [ "$quiet_pb" -gt 0 ] && [ "$quiet_fl" -gt 0 ]; then
    limit="$noisy_pct"
    basis="the quiet runs: pricebeast $quiet_pb, floor $quiet_fl of $rounds each"
else
    limit=1000
    basis="$rounds rounds"
fi
column_median() {
    awk -v s="$1" -v c="$2" -v n="$limit" '$1 == s && $7 <= n { print $c }' "$results" | median
}
pb_rps="$(column_median pricebeast 2)"
pb_cpu="$(column_median pricebeast 3)"
pb_loss="$(column_median pricebeast 4)"
pb_shard="$(column_median pricebeast 8)"
fl_rps="$(column_median floor 2)"
fl_cpu="$(column_median floor 3)"
fl_loss="$(column_median floor 4)"
late_runs="$(awk -v n="$limit" '$5 != 1 && $7 <= n { print $1 }' "$results" | sort -u | paste -sd' ')"
wrong_runs="$(awk '$6 > 0 { print $1 }' "$results" | sort -u | paste -sd' ')"

echo
echo "== medians over $basis ($rate queries/s, ${duration_s}s, $sockets sockets, batch $batch_max, $cores cores)"
# core = answers/s x us/answer: how much of its core the server needed, i.e. how far this rate is
# from saturating it.
printf '%-10s %9s %7s %9s %9s %6s\n' server answers/s loss us/answer shard_us core
printf '%-10s %9.0f %6.3f%% %9.3f %9.3f %5.0f%%\n' pricebeast "$pb_rps" "$pb_loss" "$pb_cpu" "$pb_shard" \
    "$(awk -v r="$pb_rps" -v c="$pb_cpu" 'BEGIN { print r * c / 1e4 }')"
printf '%-10s %9.0f %6.3f%% %9.3f %9s %5.0f%%\n' floor "$fl_rps" "$fl_loss" "$fl_cpu" - \
    "$(awk -v r="$fl_rps" -v c="$fl_cpu" 'BEGIN { print r * c / 1e4 }')"
awk -v a="$pb_rps" -v b="$fl_rps" -v c="$pb_cpu" -v d="$fl_cpu" 'BEGIN {
    t = (b > 0 ? a / b : 0); u = (c > 0 ? d / c : 0)
    printf "throughput ratio pricebeast/floor: %.2f   target >= 0.80: %s\n", t, (t >= 0.8 ? "met" : "NOT met")
    printf "cpu ratio        floor/pricebeast: %.2f   target >= 0.80 (pricebeast <= 1.25x the floor per answer): %s\n",
        u, (u >= 0.8 ? "met" : "NOT met")
}'
awk -v p="$pb_loss" -v f="$fl_loss" 'BEGIN {
    if (p > 1 || f > 1) printf "loss over 1%% (pricebeast %.2f%%, floor %.2f%%): the rate saturates a server, or the machine is busy; lower -q to compare CPU\n", p, f
}'
if [ "$noisy_runs" -gt 0 ]; then
    echo "$noisy_runs of $((2 * rounds)) runs shared the machine with other work (other > $noisy_pct% of a core)$(
        [ "$limit" = 1000 ] && echo ": they are in the medians, expect noise" || echo ": left out of the medians")"
fi
status=0
if [ -n "$late_runs" ]; then
    echo "the load generator fell behind its rate in runs against: $late_runs (their figures describe the load, not the server; lower -q)" >&2
    status=1
fi
if [ -n "$wrong_runs" ]; then
    echo "wrong, duplicate or non-ok answers from: $wrong_runs" >&2
    status=1
fi
exit "$status"
