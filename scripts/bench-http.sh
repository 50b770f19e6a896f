#!/usr/bin/env bash
# pricebeast against nginx under the same load, in the same run: a figure is a ratio against a reference measured beside it.
#
# nginx answers /v1/price with a fixed body fetched from the running pricebeast (same bytes, same
# Content-Type), so the comparison is "our whole request path" against "the cheapest answer a
# well-tuned web server can give". Two setups (-m), both for a two-core machine:
#
#   pinned (default)  pinned: server on core 0, wrk on core 1. pricebeast --shards 1 and one nginx
#                     worker, each under taskset -c 0 (and worker_cpu_affinity 01); wrk under
#                     taskset -c 1. With one core nothing is pinned.
#   shared            shared: 2 shards / 2 workers and wrk on both cores. No taskset anywhere:
#                     pricebeast --shards 2 with pin_shards = true (shard i pins itself to core i),
#                     nginx worker_processes 2 with worker_cpu_affinity auto (worker i on core i:
#                     the same placement as the shards) and one SO_REUSEPORT listener per worker
#                     (listen ... reuseport: as pricebeast's shards each have their own), and wrk
#                     free to run on either core. On more than two cores wrk may use the others too.
#
# Rounds alternate the servers; each run measures the server's CPU time from /proc/PID/stat (all
# nginx processes) per completed request, and, in the same wrk run, its system calls
# (raw_syscalls:sys_enter) and context switches per completed request with
# `perf stat -p PIDS` (all of pricebeast's threads; all nginx processes), enabled just before wrk
# starts and disabled right after it ends. Where perf is missing or cannot count, those two
# columns say n/a. Counting is not free: while perf runs, each system call of a counted process
# costs about 0.1 µs more (any other process's, wrk's, a few tens of ns), so the server that
# makes more system calls per request loses a little more of its rps and CPU per request to it.
#
#   scripts/bench-http.sh [-m pinned|shared] [-d SECONDS] [-r ROUNDS] [-c CONNECTIONS] [-t THREADS]
#                         [-w WARMUP_SECONDS] [-i DRIVER] [-b PRICEBEAST_BINARY] [-s USAGE_STORE]
#                         [-R REDIS_URL]
#
# DRIVER is pricebeast's shard io driver (auto, io_uring, epoll; default: the config's, auto).
# THREADS is wrk's (default 1). PRICEBEAST_BINARY is run instead of building pricebeast --release
# (to compare an old build with a new one). USAGE_STORE is pricebeast's usage.store (default: the
# config's, an SQLite file in the run's directory; `memory` runs without a ledger, to measure what
# the ledger costs a request). REDIS_URL turns cluster mode on (cluster.redis_url, a Redis you
# started), to measure what it costs a request.
#
# Prints a table per round, the medians, and ratios where > 1 means pricebeast is better:
# pricebeast/nginx requests per second; nginx/pricebeast CPU, system calls and context switches per
# request. Every load is aimed at 127.0.0.1 and bounded in time; both servers are stopped on exit.
set -euo pipefail

duration_s=10
rounds=3
connections=64
warmup_s=2
io_driver=""
mode=pinned
threads=1
binary=""
usage_store=""
redis_url=""
usage() {
    echo "usage: $0 [-m pinned|shared] [-d SECONDS] [-r ROUNDS] [-c CONNECTIONS] [-t THREADS] [-w WARMUP_SECONDS] [-i auto|io_uring|epoll] [-b PRICEBEAST_BINARY] [-s USAGE_STORE] [-R REDIS_URL]" >&2
    exit 2
}
while getopts "d:r:c:w:i:m:t:b:s:R:h" opt; do
    case "$opt" in
        d) duration_s="$OPTARG" ;;
        r) rounds="$OPTARG" ;;
        c) connections="$OPTARG" ;;
        w) warmup_s="$OPTARG" ;;
        i) io_driver="$OPTARG" ;;
        m) mode="$OPTARG" ;;
        t) threads="$OPTARG" ;;
        b) binary="$OPTARG" ;;
        s) usage_store="$OPTARG" ;;
        R) redis_url="$OPTARG" ;;
        *) usage ;;
    esac
done
case "$io_driver" in "" | auto | io_uring | epoll) ;; *) usage ;; esac
case "$mode" in pinned | shared) ;; *) usage ;; esac
for n in "$duration_s" "$rounds" "$connections" "$warmup_s" "$threads"; do
    [[ "$n" =~ ^[0-9]+$ ]] || usage
done
# Bounds: a run is at most 10 minutes of load and 10,000 connections; wrk wants at least one
# connection per thread.
if [ "$duration_s" -lt 1 ] || [ "$duration_s" -gt 600 ] || [ "$rounds" -lt 1 ] || [ "$rounds" -gt 20 ] ||
    [ "$connections" -lt 1 ] || [ "$connections" -gt 10000 ] || [ "$warmup_s" -gt 60 ] ||
    [ "$threads" -lt 1 ] || [ "$threads" -gt 64 ] || [ "$threads" -gt "$connections" ]; then
    usage
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib/bench.sh
source "$root/scripts/lib/bench.sh"

# cpu_ticks of whole processes, by PID.
pid_cpu_ticks() {
    local pid files=()
    for pid in "$@"; do
        files+=("/proc/$pid/stat")
    done
    cpu_ticks "${files[@]}"
}
symbol_path="/v1/price?symbol=BTC-USD"

# --- tools ---------------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
# perf only adds two columns: without it the benchmark still runs, and says n/a there.
want_perf=()
command -v perf >/dev/null 2>&1 || want_perf=(linux-perf)
install=("${need[@]}" "${want_perf[@]}")
if [ "${#install[@]}" -gt 0 ]; then
    echo "== installing ${install[*]}"
    # Debian starts a packaged service on install; a policy-rc.d that says no keeps a stray nginx
    # from taking port 80 on a machine that has none.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt_ok=1
    apt-get update -qq || apt_ok=""
    if [ -n "$apt_ok" ] && [ "${#need[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || apt_ok=""
    fi
    if [ "${#want_perf[@]}" -gt 0 ]; then
        if [ -z "$apt_ok" ] ||
            ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want_perf[@]}" >/dev/null; then
            echo "== could not install ${want_perf[*]}"
        fi
    fi
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
    if [ -z "$apt_ok" ] && [ "${#need[@]}" -gt 0 ]; then
        echo "could not install ${need[*]}" >&2
        exit 1
    fi
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

# Can perf count both events here (a container may refuse perf_event_open or hide tracefs)?
perf_events="raw_syscalls:sys_enter,context-switches"
perf_ok=""
if command -v perf >/dev/null 2>&1 &&
    perf stat -x, -e "$perf_events" true 2>&1 >/dev/null |
    awk -F, '$3 == "raw_syscalls:sys_enter" && $1 ~ /^[0-9]+$/ { ok = 1 } END { exit !ok }'; then
    perf_ok=1
else
    echo "== perf cannot count $perf_events here: syscalls_per_req and ctxsw_per_req are n/a"
fi

cores="$(nproc)"
if [ "$mode" = shared ]; then
    [ "$cores" -ge 2 ] || { echo "-m shared needs two cores; this machine has $cores" >&2; exit 2; }
    shards=2
    nginx_workers=2
    server_cpu=()
    load_cpu=()
    # Worker i on core i, as shard i pins itself to core i (pin_shards); and a listener per
    # worker, as per shard.
    nginx_affinity="worker_cpu_affinity auto;"
    nginx_listen_flags=" reuseport"
    setup="shared: 2 shards / 2 workers and wrk on both cores"
else
    shards=1
    nginx_workers=1
    nginx_listen_flags=""
    if [ "$cores" -ge 2 ]; then
        server_cpu=(taskset -c 0)
        load_cpu=(taskset -c 1)
        nginx_affinity="worker_cpu_affinity 01;"
        setup="pinned: server on core 0, wrk on core 1"
    else
        server_cpu=()
        load_cpu=()
        nginx_affinity=""
        setup="pinned: one core, so nothing pinned: server and wrk share it"
    fi
fi
echo "== setup: $setup"
[ "$mode" = pinned ] || [ "$cores" -le 2 ] || echo "== note: $cores cores; wrk may run on cores 2 and up too"

# --- build ---------------------------------------------------------------------------------------
pricebeast="$(pricebeast_binary "$root" "$binary")"

work="$(mktemp -d /tmp/bench-http.XXXXXX)"
pb_pid=""
nginx_pid=""
cleanup() {
    stop "$pb_pid"
    stop "$nginx_pid"
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on: nginx needs one named up front (pricebeast binds port 0).
free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

nginx_pids() {
    echo "$nginx_pid"
    pgrep -P "$nginx_pid" || true
}

# --- pricebeast ------------------------------------------------------------------------------------
key="$("$pricebeast" keys new --tier partner --name bench-http --keys-file "$work/keys.toml")"
driver_flag=()
[ -z "$io_driver" ] || driver_flag=(--io-driver "$io_driver")
pb_flags=(--shards "$shards")
: >"$work/pricebeast.toml"
if [ "$mode" = shared ]; then
    # pin_shards is the default; written down so that this setup does not depend on the default.
    printf '[server]\npin_shards = true\n' >>"$work/pricebeast.toml"
fi
if [ -n "$usage_store" ]; then
    printf '[usage]\nstore = "%s"\n' "$usage_store" >>"$work/pricebeast.toml"
fi
if [ -n "$redis_url" ]; then
    printf '[cluster]\nredis_url = "%s"\n' "$redis_url" >>"$work/pricebeast.toml"
fi
[ ! -s "$work/pricebeast.toml" ] || pb_flags+=(--config "$work/pricebeast.toml")
echo "== starting pricebeast ${pb_flags[*]} ${driver_flag[*]}"
[ ! -s "$work/pricebeast.toml" ] || echo "== $work/pricebeast.toml: $(tr '\n' ' ' <"$work/pricebeast.toml")"
"${server_cpu[@]}" "$pricebeast" serve "${pb_flags[@]}" "${driver_flag[@]}" --keys-file "$work/keys.toml" \
    --http 127.0.0.1:0 --udp 127.0.0.1:0 --admin 127.0.0.1:0 >"$work/pricebeast.log" 2>&1 &
pb_pid=$!
pb_port=""
for _ in $(seq 100); do
    pb_port="$(grep -o 'listening http=127\.0\.0\.1:[0-9]*' "$work/pricebeast.log" | head -1 | cut -d: -f2 || true)"
    [ -n "$pb_port" ] && break
    kill -0 "$pb_pid" 2>/dev/null || { cat "$work/pricebeast.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$pb_port" ] || { echo "pricebeast did not report its port" >&2; cat "$work/pricebeast.log" >&2; exit 1; }
pb_url="http://127.0.0.1:$pb_port$symbol_path"

# The simulator needs a tick before BTC-USD has a fresh price.
body=""
for _ in $(seq 100); do
    if body="$(curl -sf --max-time 2 -H "X-API-Key: $key" "$pb_url")"; then
        break
    fi
    body=""
    sleep 0.1
done
[ -n "$body" ] || { echo "pricebeast never served $symbol_path" >&2; exit 1; }
pb_driver="$(grep -o 'driver="*[a-z_]*' "$work/pricebeast.log" | head -1 | sed 's/driver="*//' || true)"
echo "== pricebeast serving on 127.0.0.1:$pb_port, shard io driver: ${pb_driver:-unknown}"
content_type="$(curl -s --max-time 2 -o /dev/null -w '%{content_type}' -H "X-API-Key: $key" "$pb_url")"
# nginx reads the body inside single quotes, where $ starts a variable.
if [[ "$body$content_type" == *"'"* || "$body$content_type" == *'$'* || "$body$content_type" == *\\* ]]; then
    echo "the body needs escaping for nginx: $body" >&2
    exit 1
fi

# --- nginx ---------------------------------------------------------------------------------------
nginx_port="$(free_port)"
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<EOF
user root;
worker_processes $nginx_workers;
$nginx_affinity
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 65;
    # The default (1000) would close each wrk connection every thousand requests; pricebeast has
    # no such limit.
    keepalive_requests 100000000;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:$nginx_port$nginx_listen_flags;
        location /v1/price {
            default_type $content_type;
            add_header Cache-Control no-store;
            return 200 '$body';
        }
    }
}
EOF
if [ "$nginx_workers" -eq 1 ]; then nginx_shown="1 worker"; else nginx_shown="$nginx_workers workers"; fi
echo "== starting nginx ($nginx_shown) on 127.0.0.1:$nginx_port"
"${server_cpu[@]}" "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx/logs/stdout.log" 2>&1 &
nginx_pid=$!
nginx_url="http://127.0.0.1:$nginx_port$symbol_path"
for _ in $(seq 100); do
    curl -sf --max-time 2 -o /dev/null "$nginx_url" && break
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/nginx/logs/"* >&2; exit 1; }
    sleep 0.1
done
# The master and its workers; the first worker can answer before the master has forked the
# next, so wait for them all. A worker that died would fail the run (its replacement's CPU would
# be missed).
nginx_all=()
for _ in $(seq 50); do
    mapfile -t nginx_all < <(nginx_pids)
    [ "${#nginx_all[@]}" -lt $((1 + nginx_workers)) ] || break
    sleep 0.1
done
[ "${#nginx_all[@]}" -ge $((1 + nginx_workers)) ] || { echo "nginx has fewer than $nginx_workers worker processes" >&2; exit 1; }
nginx_body="$(curl -sf --max-time 2 "$nginx_url")"
pb_size="$(curl -s --max-time 2 -o /dev/null -w '%{size_header}+%{size_download}' -H "X-API-Key: $key" "$pb_url")"
nginx_size="$(curl -s --max-time 2 -o /dev/null -w '%{size_header}+%{size_download}' "$nginx_url")"
echo "pricebeast response: $pb_size bytes (head+body), body: $body"
echo "nginx response:      $nginx_size bytes (head+body), body: $nginx_body"
[ "${#nginx_body}" -eq "${#body}" ] || { echo "nginx's body differs in size from pricebeast's" >&2; exit 1; }

# --- system calls and context switches -----------------------------------------------------------
# perf stat attached to the PIDs given (-p: every thread of each, and threads they start later),
# its counters off until it confirms "enable" on the control fifo, so the count starts with wrk
# and not with perf's own setup. perf_end turns them off, stops perf (SIGINT: it prints its
# counts) and sets perf_syscalls and perf_ctxsw, or n/a. Both run in the shell that runs wrk.
perf_pid=""
perf_ctl=""
perf_ack=""
perf_begin() {
    local pids
    perf_pid=""
    [ -n "$perf_ok" ] || return 0
    pids="$(IFS=,; echo "$*")"
    rm -f "$work/perf.ctl" "$work/perf.ack" "$work/perf.out"
    mkfifo "$work/perf.ctl" "$work/perf.ack"
    # Opened read-write, a fifo does not wait for its other end.
    exec {perf_ctl}<>"$work/perf.ctl" {perf_ack}<>"$work/perf.ack"
    "${load_cpu[@]}" perf stat -x, -e "$perf_events" -D -1 --control "fd:$perf_ctl,$perf_ack" -p "$pids" \
        >"$work/perf.out" 2>&1 &
    perf_pid=$!
    echo enable >&"$perf_ctl"
    for _ in $(seq 50); do
        read -r -t 0.1 -u "$perf_ack" _ && return 0
        kill -0 "$perf_pid" 2>/dev/null || break
    done
    perf_end
    echo "perf stat -p $pids did not start counting:" >&2
    cat "$work/perf.out" >&2
}
perf_end() {
    local confirmed=""
    perf_syscalls=n/a
    perf_ctxsw=n/a
    [ -n "$perf_pid" ] || return 0
    if kill -0 "$perf_pid" 2>/dev/null; then
        echo disable >&"$perf_ctl"
        read -r -t 5 -u "$perf_ack" _ && confirmed=1
        kill -INT "$perf_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$perf_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$perf_pid" 2>/dev/null || true
    fi
    wait "$perf_pid" 2>/dev/null || true
    perf_pid=""
    exec {perf_ctl}>&- {perf_ack}>&-
    [ -n "$confirmed" ] || return 0
    read -r perf_syscalls perf_ctxsw < <(awk -F, '
        $3 == "raw_syscalls:sys_enter" && $1 ~ /^[0-9]+$/ { s = $1 }
        ($3 == "context-switches" || $3 == "cs") && $1 ~ /^[0-9]+$/ { c = $1 }
        END { print (s == "" ? "n/a" : s), (c == "" ? "n/a" : c) }' "$work/perf.out")
}

# --- load ----------------------------------------------------------------------------------------
# One wrk run; prints "requests rps cpu_us_per_request user_percent non2xx errors
# syscalls_per_request context_switches_per_request" (the last two n/a where perf cannot count).
run_load() {
    local url="$1" seconds="$2"
    shift 2
    local pids=("$@") before after out requests rps non2xx errors
    perf_begin "${pids[@]}"
    read -r -a before < <(pid_cpu_ticks "${pids[@]}")
    out="$("${load_cpu[@]}" wrk -t"$threads" -c"$connections" -d"${seconds}s" --timeout 5s -H "X-API-Key: $key" "$url")"
    read -r -a after < <(pid_cpu_ticks "${pids[@]}")
    perf_end
    read -r requests rps non2xx errors < <(awk '
        /requests in/ { r = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { n = $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i++) e += $i }
        END { print r + 0, rps + 0, n + 0, e + 0 }' <<<"$out")
    awk -v r="$requests" -v rps="$rps" -v t="$((after[0] - before[0]))" -v u="$((after[1] - before[1]))" \
        -v hz="$(getconf CLK_TCK)" -v n="$non2xx" -v e="$errors" -v s="$perf_syscalls" -v c="$perf_ctxsw" '
        function per_request(x) { return (x == "n/a" || r <= 0) ? "n/a" : sprintf("%.3f", x / r) }
        BEGIN { printf "%d %.0f %.3f %.0f %d %d %s %s\n", r, rps, (r > 0 ? t * 1e6 / hz / r : 0), (t > 0 ? 100 * u / t : 0), n, e, per_request(s), per_request(c) }'
}

if [ "$warmup_s" -gt 0 ]; then
    echo "== warm-up: ${warmup_s}s each"
    run_load "$pb_url" "$warmup_s" "$pb_pid" >/dev/null
    run_load "$nginx_url" "$warmup_s" "${nginx_all[@]}" >/dev/null
fi

# What each server burns with no load (pricebeast's feed and stats threads, nginx's timers): it is
# inside every CPU-per-request figure below, so it is shown.
idle_s=2
read -r pb_idle_before _ < <(pid_cpu_ticks "$pb_pid")
read -r ng_idle_before _ < <(pid_cpu_ticks "${nginx_all[@]}")
sleep "$idle_s"
read -r pb_idle_after _ < <(pid_cpu_ticks "$pb_pid")
read -r ng_idle_after _ < <(pid_cpu_ticks "${nginx_all[@]}")
awk -v p="$((pb_idle_after - pb_idle_before))" -v n="$((ng_idle_after - ng_idle_before))" -v s="$idle_s" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "== idle CPU: pricebeast %.1f ms/s, nginx %.1f ms/s\n", p * 1000 / hz / s, n * 1000 / hz / s }'

echo "== load: wrk -t$threads -c$connections -d${duration_s}s -H 'X-API-Key: ...' $symbol_path, $rounds rounds"
results="$work/results"
: >"$results"
printf '%-6s %-11s %12s %10s %14s %9s %8s %7s %16s %13s\n' round server requests rps cpu_us_per_req user_cpu non2xx errors \
    syscalls_per_req ctxsw_per_req
for round in $(seq "$rounds"); do
    # Alternate who goes first, so a drift in the machine's state does not favour one side.
    if [ $((round % 2)) -eq 1 ]; then order="pricebeast nginx"; else order="nginx pricebeast"; fi
    for server in $order; do
        if [ "$server" = pricebeast ]; then
            line="$(run_load "$pb_url" "$duration_s" "$pb_pid")"
        else
            line="$(run_load "$nginx_url" "$duration_s" "${nginx_all[@]}")"
        fi
        read -r requests rps cpu user non2xx errors syscalls ctxsw <<<"$line"
        printf '%-6s %-11s %12s %10s %14s %8s%% %8s %7s %16s %13s\n' "$round" "$server" "$requests" "$rps" "$cpu" "$user" \
            "$non2xx" "$errors" "$syscalls" "$ctxsw"
        echo "$server $rps $cpu $non2xx $syscalls $ctxsw" >>"$results"
    done
done

# The median of column $2 of server $1's rows, leaving out n/a; n/a when nothing is left.
median_of() {
    local values
    values="$(awk -v s="$1" -v f="$2" '$1 == s && $f != "n/a" { print $f }' "$results")"
    if [ -n "$values" ]; then median <<<"$values" | awk '{ printf "%.3f\n", $1 }'; else echo n/a; fi
}
pb_rps="$(awk '$1 == "pricebeast" { print $2 }' "$results" | median)"
pb_cpu="$(awk '$1 == "pricebeast" { print $3 }' "$results" | median)"
ng_rps="$(awk '$1 == "nginx" { print $2 }' "$results" | median)"
ng_cpu="$(awk '$1 == "nginx" { print $3 }' "$results" | median)"
pb_sys="$(median_of pricebeast 5)"
pb_ctx="$(median_of pricebeast 6)"
ng_sys="$(median_of nginx 5)"
ng_ctx="$(median_of nginx 6)"
bad="$(awk '$4 > 0 { print $1 }' "$results" | sort -u | paste -sd' ')"

echo
echo "== medians over $rounds rounds (wrk -t$threads -c$connections -d${duration_s}s, $cores cores)"
echo "== setup: $setup"
printf '%-11s %10s %14s %16s %13s\n' server rps cpu_us_per_req syscalls_per_req ctxsw_per_req
printf '%-11s %10.0f %14.3f %16s %13s\n' pricebeast "$pb_rps" "$pb_cpu" "$pb_sys" "$pb_ctx"
printf '%-11s %10.0f %14.3f %16s %13s\n' nginx "$ng_rps" "$ng_cpu" "$ng_sys" "$ng_ctx"
awk -v a="$pb_rps" -v b="$ng_rps" -v c="$pb_cpu" -v d="$ng_cpu" -v ps="$pb_sys" -v ns="$ng_sys" -v pc="$pb_ctx" -v nc="$ng_ctx" '
    function ratio(ours, theirs) { return (ours == "n/a" || theirs == "n/a" || ours + 0 <= 0) ? "n/a" : sprintf("%.2f", theirs / ours) }
    BEGIN {
    printf "rps ratio  pricebeast/nginx: %.2f\n", (b > 0 ? a / b : 0)
    printf "cpu ratio  nginx/pricebeast: %.2f   (> 1: pricebeast is better)\n", (c > 0 ? d / c : 0)
    printf "syscall ratio  nginx/pricebeast: %s   (> 1: pricebeast makes fewer per request)\n", ratio(ps, ns)
    printf "ctxsw ratio    nginx/pricebeast: %s   (> 1: pricebeast switches less per request)\n", ratio(pc, nc)
}'
if [ -n "$bad" ]; then
    echo "non-2xx answers from: $bad (the figures above include them)" >&2
    exit 1
fi
