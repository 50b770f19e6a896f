#!/usr/bin/env bash
# pricebeast's WebSocket push at N streams: how old a price is when a client reads it, how many
# frames a second the server writes, and how much of the server's CPU each frame costs.
#
#   scripts/bench-ws-push.sh [-u USERS] [-r RAMP_SECONDS] [-H HOLD_SECONDS] [-d DROP_SECONDS]
#                            [-o OUTDIR] [-i DRIVER] [-b PRICEBEAST_BINARY]
#
# Setup: shared: the server (2 shards, one per core, each pinned to its core) and the stress
# client (one worker thread per core) on both of the 2 cores, on 127.0.0.1. The server runs the
# simulator feed (every symbol moves every 100 ms) with a temporary config, keys file (one partner
# key) and admin token. The load is pricebeast's own stress client running
# config/plans/ws-capacity.toml with its users and durations replaced: ramp to USERS streams
# (default 5000) over RAMP_SECONDS (default 30), hold them HOLD_SECONDS (default 45), drop to 0 over
# DROP_SECONDS (default 15). Each user opens one session for 1 to 5 of the plan's 8 crypto symbols
# and reads its stream until the drop reaches it. The plan's thresholds (push p99 <= 300 ms, no
# errors) stay. PRICEBEAST_BINARY is run instead of building this checkout
# (`cargo build --release --locked`), to compare an old build with a new one; DRIVER is the
# shards' io driver (auto, io_uring, epoll; default: the config's, auto). OUTDIR keeps the stress
# client's summary.json, summary.md and chart.svg, with the plan, its table and the server's
# /admin/stress-stats at both ends of the window below.
#
# How to read the figures (all over the hold, the plateau of USERS streams):
#   client price age   the stress client's push latency of its hold stage: a frame's arrival (wall
#                      clock) minus each of its prices' `ts`, first frames left out. It includes the
#                      client's own delay in reading, on cores it shares with the server.
#   frames/s           frames the client read per second of the hold stage.
#   errors             failed user attempts (session status, connect, timeout, I/O, handshake,
#                      closed by the server, error or bad frames) in the hold stage and the whole
#                      run; any is a fault (the plan allows none).
# The server's figures come from two /admin/stress-stats snapshots and /proc/PID/stat, taken 1 s
# after the server's open_websocket_sessions first reads USERS and 1 s before the hold's end (the
# window, about HOLD_SECONDS - 2 long):
#   server push        push_latency_us: from the book write of a frame's oldest price to the
#                      completion of its write. Mean (sum / count), the histogram bucket holding
#                      p50, p90 and p99 (bounds 10, 25, 50, 100, 250, 500 us, 1, 2.5, 5, 10, 25,
#                      50, 100 ms, 1 s: no finer than that; the server's own p50_us/p99_us are the
#                      upper bounds), then the share of each non-empty bucket. The client's age
#                      runs on to the client's read, so its mean minus this mean is mostly the
#                      client's side (its wake-ups and reads, on the cores it shares).
#   frames_pushed/s    the server's count of completed frame writes, per second of the window;
#                      with fanout_wakeups (fan-out passes: frames per pass) and updates_conflated
#                      (updates replaced by a newer price before they went out: a full socket or a
#                      stream inside its frame interval).
#   CPU per frame      the server's user+system CPU time over the window divided by the frames it
#                      pushed in it; "above idle" first takes off what the server burns with no
#                      stream at all (the simulator, the stats sampler), measured for 4 s before the
#                      run. The kernel's loopback TCP is most of it. /proc counts in clock ticks
#                      (10 ms), so a short window is coarse.
# A build without a counter (fanout_wakeups, control_queue_closes are newer) shows n/a for it.
# To compare two builds, run this once with -b OLD_BINARY and once without (or -b NEW_BINARY), at
# the same sizes, one after the other on an otherwise idle machine.
# Last, whether the stream gauges (open_websocket_sessions, pending_sessions, watched_symbols,
# open_connections) came back to 0 after the drop, polled for up to 10 s.
#
# Everything is aimed at 127.0.0.1 and bounded in time; server and client are stopped on exit.
# Each process here may open at most 20,000 files, so USERS is at most 18,000. Exit status: 0 when
# the run passed, 1 when the stress client failed (a threshold, a count that did not reconcile),
# a gauge did not return to 0 or the window could not be taken; the summary is printed either way.
set -euo pipefail

users=5000
ramp_s=30
hold_s=45
drop_s=15
outdir=""
io_driver=""
binary=""
usage() {
    echo "usage: $0 [-u USERS] [-r RAMP_SECONDS] [-H HOLD_SECONDS] [-d DROP_SECONDS] [-o OUTDIR] [-i auto|io_uring|epoll] [-b PRICEBEAST_BINARY]" >&2
    exit 2
}
while getopts "u:r:H:d:o:i:b:h" opt; do
    case "$opt" in
        u) users="$OPTARG" ;;
        r) ramp_s="$OPTARG" ;;
        H) hold_s="$OPTARG" ;;
        d) drop_s="$OPTARG" ;;
        o) outdir="$OPTARG" ;;
        i) io_driver="$OPTARG" ;;
        b) binary="$OPTARG" ;;
        *) usage ;;
    esac
done
[ "$OPTIND" -gt $# ] || usage
case "$io_driver" in "" | auto | io_uring | epoll) ;; *) usage ;; esac
for n in "$users" "$ramp_s" "$hold_s" "$drop_s"; do
    [[ "$n" =~ ^[0-9]+$ ]] || usage
done
# Bounds: the open-file limit (20,000 per process here), at most 30 minutes of load, and a hold
# long enough for a window 1 s inside each end.
if [ "$users" -lt 1 ] || [ "$users" -gt 18000 ] || [ "$ramp_s" -lt 1 ] || [ "$ramp_s" -gt 600 ] ||
    [ "$hold_s" -lt 5 ] || [ "$hold_s" -gt 600 ] || [ "$drop_s" -lt 1 ] || [ "$drop_s" -gt 600 ]; then
    usage
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
# Plain `shellcheck` does not follow sources (SC1091); `shellcheck -x` does, from any directory.
# shellcheck source-path=SCRIPTDIR source=lib/bench.sh disable=SC1091
source "$root/scripts/lib/bench.sh"
base_plan="$root/config/plans/ws-capacity.toml"
[ -f "$base_plan" ] || { echo "no $base_plan" >&2; exit 1; }

# --- tools ---------------------------------------------------------------------------------------
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v jq >/dev/null 2>&1 || need+=(jq)
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cores="$(nproc)"
setup="shared: 2 shards (one per core, pinned) and the stress client on both cores"
[ "$cores" -eq 2 ] || setup="shared: $cores shards (one per core, pinned) and the stress client on all $cores cores (written for 2)"
echo "== setup: $setup"

# --- build ---------------------------------------------------------------------------------------
if [ -n "$binary" ]; then
    pricebeast="$(pricebeast_binary "$root" "$binary")"
else
    echo "== building pricebeast: cargo build --release --locked" >&2
    (cd "$root" && cargo build --release --locked --bin pricebeast) >&2
    target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)"
    pricebeast="$target_dir/release/pricebeast"
fi

work="$(mktemp -d /tmp/bench-ws-push.XXXXXX)"
pb_pid=""
stress_pid=""
# shellcheck disable=SC2317 # run by the EXIT trap, which shellcheck 0.9 does not see
cleanup() {
    stop "$stress_pid"
    stop "$pb_pid"
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "$outdir" ]; then
    mkdir -p "$outdir"
    outdir="$(cd "$outdir" && pwd)"
    report_dir="$outdir"
else
    report_dir="$work/out"
fi

# Seconds since the epoch, to the microsecond.
now() {
    date +%s.%6N
}
# /admin/stress-stats into file $1 (exit status 0 when the admin listener answered).
stats_to() {
    curl -sf --max-time 2 -K "$work/curl.cfg" "http://127.0.0.1:$admin_port/admin/stress-stats" >"$1.tmp" &&
        mv "$1.tmp" "$1"
}
# One gauge of /admin/stress-stats ("" when the admin listener does not answer).
gauge() {
    curl -sf --max-time 2 -K "$work/curl.cfg" "http://127.0.0.1:$admin_port/admin/stress-stats" |
        jq -r --arg g "$1" '.gauges[$g] // empty' 2>/dev/null || true
}

# --- pricebeast ----------------------------------------------------------------------------------
key="$("$pricebeast" keys new --tier partner --name bench-ws-push --keys-file "$work/keys.toml")"
admin_token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# The token stays out of every command line: curl reads it from a file, the stress client from
# its environment (as do the key and the server, which also reads the config's).
printf 'header = "Authorization: Bearer %s"\n' "$admin_token" >"$work/curl.cfg"
cat >"$work/pricebeast.toml" <<EOF
[server]
http = "127.0.0.1:0"
udp = "127.0.0.1:0"
# One shard per core, each pinned to its core (the defaults, written down).
shards = 0
pin_shards = true

[admin]
addr = "127.0.0.1:0"
token = "$admin_token"

[keys]
file = "$work/keys.toml"

[feed]
kind = "simulator"

[log]
level = "warn,pricebeast::server=info"
EOF
chmod 600 "$work/pricebeast.toml" "$work/curl.cfg"
driver_flag=()
[ -z "$io_driver" ] || driver_flag=(--io-driver "$io_driver")
echo "== starting pricebeast serve ${driver_flag[*]}"
PRICEBEAST_ADMIN_TOKEN="$admin_token" "$pricebeast" serve --config "$work/pricebeast.toml" "${driver_flag[@]}" \
    >"$work/pricebeast.log" 2>&1 &
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
stats_to "$work/stats-start.json" || { echo "the admin listener does not answer /admin/stress-stats" >&2; exit 1; }
jq -e '.streams.push_latency_us.buckets | length > 0' "$work/stats-start.json" >/dev/null ||
    { echo "this build's /admin/stress-stats has no streams.push_latency_us histogram" >&2; exit 1; }
pb_driver="$(grep -o 'driver="*[a-z_]*' "$work/pricebeast.log" | head -1 | sed 's/driver="*//' || true)"
echo "== pricebeast (pid $pb_pid) ready on 127.0.0.1:$http_port, admin 127.0.0.1:$admin_port, shard io driver ${pb_driver:-unknown}, open-file limit $(awk '$1 == "Max" && $2 == "open" { print $4 }' "/proc/$pb_pid/limits")"

# Settle (the book, the simulator's state), then what the server burns with no stream.
sleep 2
idle_s=4
read -r idle_before _ < <(cpu_ticks "/proc/$pb_pid/stat")
sleep "$idle_s"
read -r idle_after _ < <(cpu_ticks "/proc/$pb_pid/stat")
hz="$(getconf CLK_TCK)"
idle_ms_per_s="$(awk -v t="$((idle_after - idle_before))" -v hz="$hz" -v s="$idle_s" 'BEGIN { printf "%.1f", t * 1000 / hz / s }')"
echo "== idle server CPU: $idle_ms_per_s ms/s"

# --- the plan ------------------------------------------------------------------------------------
# ws-capacity.toml with its three stages' users and durations replaced; its leading comment (the
# shipped sizes) is replaced too. Refused if the shipped plan is no longer ramp, hold, drop.
{
    echo "# Generated by scripts/bench-ws-push.sh from config/plans/ws-capacity.toml: ramp to $users users over"
    echo "# ${ramp_s}s, hold ${hold_s}s, drop to 0 over ${drop_s}s; each user streams until the drop reaches it."
    awk -v users="$users" -v ramp="$ramp_s" -v hold="$hold_s" -v drop="$drop_s" '
        !started && /^#/ { next }
        { started = 1 }
        /^\[\[stages\]\]/ { stage++ }
        stage > 0 && /^users *=/ {
            split($0, f, "="); shipped[stage] = f[2] + 0; seen_users++
            $0 = "users = " (stage == 3 ? 0 : users)
        }
        stage > 0 && /^over_s *=/ { seen_over++; $0 = "over_s = " (stage == 1 ? ramp : stage == 2 ? hold : drop) }
        { print }
        END {
            if (stage != 3 || seen_users != 3 || seen_over != 3 || shipped[1] != shipped[2] || shipped[3] != 0) {
                print "config/plans/ws-capacity.toml is no longer three stages (ramp, hold, drop to 0)" > "/dev/stderr"
                exit 1
            }
        }' "$base_plan"
} >"$work/plan.toml"
grep -q '^protocol = "ws"' "$work/plan.toml" || { echo "config/plans/ws-capacity.toml is not a ws plan" >&2; exit 1; }
[ -z "$outdir" ] || cp "$work/plan.toml" "$outdir/plan.toml"

# --- the run -------------------------------------------------------------------------------------
echo "== $users streams: ramp ${ramp_s}s, hold ${hold_s}s, drop ${drop_s}s (ws-capacity mix)"
t0="$(now)"
PRICEBEAST_KEY="$key" PRICEBEAST_ADMIN_TOKEN="$admin_token" \
    timeout "$((ramp_s + hold_s + drop_s + 90))" "$pricebeast" stress --plan "$work/plan.toml" \
    --target "127.0.0.1:$http_port" --admin "127.0.0.1:$admin_port" --out "$report_dir" \
    >"$work/stress.out" 2>"$work/stress.err" &
stress_pid=$!

# The window: from 1 s after every stream is open to 1 s before the hold ends (by the clock the
# client started on; it starts its first stage a little after, so the window ends a little
# earlier than that, never later).
window_problem=""
hold_end="$(awk -v t="$t0" -v r="$ramp_s" -v h="$hold_s" 'BEGIN { printf "%.6f", t + r + h }')"
open=""
while awk -v n="$(now)" -v e="$hold_end" 'BEGIN { exit !(n < e - 3) }'; do
    open="$(gauge open_websocket_sessions)"
    [ "${open:-0}" -ge "$users" ] && break
    kill -0 "$stress_pid" 2>/dev/null || break
    sleep 0.2
done
if [ "${open:-0}" -lt "$users" ]; then
    window_problem="only ${open:-no} of $users streams open on the server by 3 s before the hold's end"
else
    all_open_at="$(now)"
    sleep 1
    read -r ticks_a user_a < <(cpu_ticks "/proc/$pb_pid/stat")
    stats_to "$work/stats-a.json" || window_problem="no /admin/stress-stats at the window's start"
    t_a="$(now)"
    wait_s="$(awk -v n="$t_a" -v e="$hold_end" 'BEGIN { w = e - 1 - n; printf "%.3f", (w > 0 ? w : 0) }')"
    if [ -z "$window_problem" ] && awk -v w="$wait_s" 'BEGIN { exit !(w < 1) }'; then
        window_problem="the hold left less than 1 s of window (every stream open $(awk -v a="$all_open_at" -v t="$t0" 'BEGIN { printf "%.1f", a - t }') s after the start; a longer -H)"
    fi
    if [ -z "$window_problem" ]; then
        sleep "$wait_s"
        read -r ticks_b user_b < <(cpu_ticks "/proc/$pb_pid/stat")
        stats_to "$work/stats-b.json" || window_problem="no /admin/stress-stats at the window's end"
        t_b="$(now)"
        open_b="$(jq -r '.gauges.open_websocket_sessions' "$work/stats-b.json" 2>/dev/null || echo "?")"
        [ "$open_b" = "$users" ] || window_problem="the window ended with $open_b of $users streams open (it ran into the drop, or streams were lost)"
    fi
fi
if [ -n "$outdir" ]; then
    for f in stats-a.json stats-b.json; do
        [ ! -f "$work/$f" ] || cp "$work/$f" "$outdir/server-$f"
    done
fi

stress_status=0
wait "$stress_pid" || stress_status=$?
stress_pid=""
[ -z "$outdir" ] || cp "$work/stress.out" "$outdir/stress-table.txt"

# Gauges after the drop: the stress client already waited for two of them; all four, up to 10 s.
gauges_line=""
gauges_zero=""
gauges_waited=""
g_start="$(now)"
for _ in $(seq 50); do
    if stats_to "$work/stats-end.json"; then
        gauges_line="$(jq -r '.gauges | "open_websocket_sessions=\(.open_websocket_sessions) pending_sessions=\(.pending_sessions) watched_symbols=\(.watched_symbols // "n/a") open_connections=\(.open_connections)"' "$work/stats-end.json")"
        if jq -e '.gauges | .open_websocket_sessions == 0 and .pending_sessions == 0 and (.watched_symbols // 0) == 0 and .open_connections == 0' \
            "$work/stats-end.json" >/dev/null; then
            gauges_zero=1
            break
        fi
    fi
    sleep 0.2
done
gauges_waited="$(awk -v n="$(now)" -v s="$g_start" 'BEGIN { printf "%.1f", n - s }')"
[ -z "$outdir" ] || [ ! -f "$work/stats-end.json" ] || cp "$work/stats-end.json" "$outdir/server-stats-end.json"

# --- the report ----------------------------------------------------------------------------------
sed -n '/^stage /,$p' "$work/stress.out"
echo
echo "== $users streams, ws-capacity mix (1-5 of 8 symbols each), ramp ${ramp_s}s / hold ${hold_s}s / drop ${drop_s}s"
echo "== $pricebeast ($("$pricebeast" --version 2>/dev/null || echo "no version")); setup: $setup"
summary="$report_dir/summary.json"
status=0
if [ -f "$summary" ] && jq -e '.levels | length == 3' "$summary" >/dev/null 2>&1; then
    jq -r '
        def failed: .attempts - .ok;
        def kinds: [to_entries[] | select((.key | IN("session_failed", "connect_errors", "timeouts", "io_errors",
            "handshake_errors", "closed_by_server", "error_frames", "bad_frames")) and .value > 0) | "\(.key) \(.value)"]
            | if length == 0 then "" else " (" + join(", ") + ")" end;
        .levels[1].ws as $h | .ws.counts as $all |
        "client price age (hold stage): p50 \($h.push.p50_ms) / p90 \($h.push.p90_ms) / p99 \($h.push.p99_ms) / max \($h.push.max_ms) ms, mean \($h.push.mean_ms * 100 | round / 100) ms",
        "frames/s (hold stage, client): \($h.frames_per_s | round)   streams open at its end: \($h.streams_open_end) (server \($h.server_open_websocket_sessions // "?"))",
        "errors: hold stage \($h.counts | failed)\($h.counts | kinds); whole run \($all | failed) of \($all.attempts) attempts\($all | kinds); prices missing \($all.missing), ts ahead \($all.ts_ahead)",
        "reconciliation: \(if (.reconciliation_differences | length) == 0 then "client and server counts match" else "\(.reconciliation_differences | length) differences (summary.json)" end)",
        (.failures[]? | "stress client failure: \(.)")' "$summary"
else
    echo "no usable stress report ($summary): the stress client exited $stress_status" >&2
    tail -5 "$work/stress.err" >&2
    status=1
fi

if [ -z "$window_problem" ]; then
    # Deltas over the window: counters (n/a where this build has none), histogram count and sum,
    # and the buckets with their bounds.
    read -r frames wakeups conflated slow_closes control_closes push_count push_sum < <(
        jq -rn --slurpfile a "$work/stats-a.json" --slurpfile b "$work/stats-b.json" '
            $a[0].streams as $x | $b[0].streams as $y |
            def d(k): if $x[k] == null or $y[k] == null then "n/a" else $y[k] - $x[k] end;
            [d("frames_pushed"), d("fanout_wakeups"), d("updates_conflated"), d("slow_client_closes"),
             d("control_queue_closes"), $y.push_latency_us.count - $x.push_latency_us.count,
             $y.push_latency_us.sum_us - $x.push_latency_us.sum_us] | @tsv')
    buckets="$(jq -rn --slurpfile a "$work/stats-a.json" --slurpfile b "$work/stats-b.json" '
        [$b[0].streams.push_latency_us.buckets, $a[0].streams.push_latency_us.buckets] | transpose | map(.[0] - .[1]) | @tsv')"
    bounds="$(jq -r '.streams.push_latency_us.bucket_bounds_us | @tsv' "$work/stats-b.json")"
    awk -v t_a="$t_a" -v t_b="$t_b" -v frames="$frames" -v wakeups="$wakeups" -v conflated="$conflated" \
        -v slow="$slow_closes" -v control="$control_closes" -v count="$push_count" -v sum="$push_sum" \
        -v buckets="$buckets" -v bounds="$bounds" -v ticks="$((ticks_b - ticks_a))" -v uticks="$((user_b - user_a))" \
        -v hz="$hz" -v idle="$idle_ms_per_s" '
        function ms(us) { return us >= 1000 ? sprintf("%g ms", us / 1000) : sprintf("%g us", us) }
        # Bucket i as a range of latencies: "<= 10 us", "25-50 ms", "500 us-1 ms", "> 1000 ms".
        function range(i) {
            if (i > nbound) return "> " ms(bd[nbound])
            if (i == 1) return "<= " ms(bd[1])
            if (bd[i - 1] >= 1000) return sprintf("%g-%g ms", bd[i - 1] / 1000, bd[i] / 1000)
            if (bd[i] < 1000) return sprintf("%g-%g us", bd[i - 1], bd[i])
            return ms(bd[i - 1]) "-" ms(bd[i])
        }
        # The bucket holding the q-quantile (the server takes its p50_us/p99_us as its upper bound).
        function bucket_of(q,   rank, seen, i) {
            if (count <= 0) return "n/a"
            rank = int(count * q); if (rank < count * q) rank++; if (rank < 1) rank = 1
            seen = 0
            for (i = 1; i <= nb; i++) { seen += b[i]; if (seen >= rank) return range(i) }
            return "n/a"
        }
        BEGIN {
            nb = split(buckets, b, "\t"); nbound = split(bounds, bd, "\t")
            s = t_b - t_a
            printf "server window: %.1f s of the hold\n", s
            printf "server push latency: mean %s ms over %d frames; buckets of p50 %s, p90 %s, p99 %s\n",
                (count > 0 ? sprintf("%.1f", sum / count / 1000) : "n/a"), count, bucket_of(0.50), bucket_of(0.90), bucket_of(0.99)
            line = ""
            for (i = 1; i <= nb; i++) if (b[i] > 0)
                line = line sprintf("%s%s %s", (line == "" ? "" : ", "), range(i),
                    (100 * b[i] / count < 0.05 ? "<0.1%" : sprintf("%.1f%%", 100 * b[i] / count)))
            print "server push buckets: " (line == "" ? "none" : line)
            fps = (frames == "n/a" || s <= 0) ? "n/a" : sprintf("%.0f", frames / s)
            if (wakeups == "n/a") passes = "fanout_wakeups n/a (not in this build)"
            else passes = sprintf("fanout_wakeups %d (%s frames each)", wakeups,
                (frames == "n/a" || wakeups <= 0) ? "n/a" : sprintf("%.1f", frames / wakeups))
            printf "frames_pushed/s (server): %s   %s   updates_conflated %s\n", fps, passes, conflated
            printf "server closes in the window: slow_client_closes %s, control_queue_closes %s\n", slow, control
            cpu_s = ticks / hz
            if (frames != "n/a" && frames > 0) {
                above = cpu_s - idle / 1000 * s
                printf "server CPU per pushed frame: %.2f us (%.2f us above idle; %.0f%% user), %.2f cores busy (idle %s ms/s)\n",
                    cpu_s * 1e6 / frames, (above > 0 ? above : 0) * 1e6 / frames, (ticks > 0 ? 100 * uticks / ticks : 0), cpu_s / s, idle
            } else {
                printf "server CPU per pushed frame: n/a (no frame pushed in the window; %.2f cores busy)\n", cpu_s / s
            }
        }'
else
    echo "server window: none: $window_problem" >&2
    status=1
fi

if [ -n "$gauges_zero" ]; then
    echo "gauges after the drop: back to 0 ($gauges_line; within ${gauges_waited} s of the client's exit)"
else
    echo "gauges after the drop: NOT back to 0 after ${gauges_waited} s: ${gauges_line:-the admin listener did not answer}" >&2
    status=1
fi
[ -z "$outdir" ] || echo "== reports kept in $outdir (summary.json, summary.md, chart.svg, plan.toml, stress-table.txt, server-stats-*.json)"
if [ "$stress_status" -ne 0 ]; then
    echo "the stress client exited $stress_status (2: a threshold, including the gauges' return to 0)" >&2
    grep -v '^stage [0-9]*/' "$work/stress.err" | tail -5 >&2 || true
    status=1
fi
exit "$status"
