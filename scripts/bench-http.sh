#!/usr/bin/env bash
# pricebeast against nginx under the same load, in the same run (STYLE.md habit 13).
#
# nginx answers /v1/price with a fixed body fetched from the running pricebeast (same bytes, same
# Content-Type), so the comparison is "our whole request path" against "the cheapest answer a
# well-tuned web server can give". Each server gets one core (pricebeast --shards 1, nginx one
# worker, both pinned to core 0 where there are two) and wrk the other (core 1). Rounds alternate
# the servers; each run measures the server's CPU time from /proc/PID/stat (all nginx processes)
# per completed request.
#
#   scripts/bench-http.sh [-d SECONDS] [-r ROUNDS] [-c CONNECTIONS] [-w WARMUP_SECONDS] [-i DRIVER]
#
# DRIVER is pricebeast's shard io driver (auto, io_uring, epoll; default: the config's, auto).
#
# Prints a table per round, the medians, and two ratios where > 1 means pricebeast is better:
# pricebeast/nginx requests per second, nginx/pricebeast CPU per request. Every load is aimed at
# 127.0.0.1 and bounded in time; both servers are stopped on exit.
set -euo pipefail

duration_s=10
rounds=3
connections=64
warmup_s=2
io_driver=""
usage() {
    echo "usage: $0 [-d SECONDS] [-r ROUNDS] [-c CONNECTIONS] [-w WARMUP_SECONDS] [-i auto|io_uring|epoll]" >&2
    exit 2
}
while getopts "d:r:c:w:i:h" opt; do
    case "$opt" in
        d) duration_s="$OPTARG" ;;
        r) rounds="$OPTARG" ;;
        c) connections="$OPTARG" ;;
        w) warmup_s="$OPTARG" ;;
        i) io_driver="$OPTARG" ;;
        *) usage ;;
    esac
done
case "$io_driver" in "" | auto | io_uring | epoll) ;; *) usage ;; esac
for n in "$duration_s" "$rounds" "$connections" "$warmup_s"; do
    [[ "$n" =~ ^[0-9]+$ ]] || usage
done
# Bounds: a run is at most 10 minutes of load and 10,000 connections.
if [ "$duration_s" -lt 1 ] || [ "$duration_s" -gt 600 ] || [ "$rounds" -lt 1 ] || [ "$rounds" -gt 20 ] ||
    [ "$connections" -lt 1 ] || [ "$connections" -gt 10000 ] || [ "$warmup_s" -gt 60 ]; then
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
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]}"
    # Debian starts a packaged service on install; a policy-rc.d that says no keeps a stray nginx
    # from taking port 80 on a machine that has none.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

cores="$(nproc)"
if [ "$cores" -ge 2 ]; then
    server_cpu=(taskset -c 0)
    load_cpu=(taskset -c 1)
    nginx_affinity="worker_cpu_affinity 01;"
else
    server_cpu=()
    load_cpu=()
    nginx_affinity=""
fi

# --- build ---------------------------------------------------------------------------------------
pricebeast="$(build_pricebeast "$root")"

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
echo "== starting pricebeast --shards 1 ${driver_flag[*]}"
"${server_cpu[@]}" "$pricebeast" serve --shards 1 "${driver_flag[@]}" --keys-file "$work/keys.toml" \
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
worker_processes 1;
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
        listen 127.0.0.1:$nginx_port;
        location /v1/price {
            default_type $content_type;
            add_header Cache-Control no-store;
            return 200 '$body';
        }
    }
}
EOF
echo "== starting nginx (1 worker) on 127.0.0.1:$nginx_port"
"${server_cpu[@]}" "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx/logs/stdout.log" 2>&1 &
nginx_pid=$!
nginx_url="http://127.0.0.1:$nginx_port$symbol_path"
for _ in $(seq 100); do
    curl -sf --max-time 2 -o /dev/null "$nginx_url" && break
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/nginx/logs/"* >&2; exit 1; }
    sleep 0.1
done
# The master and its one worker; the worker is forked before nginx answers, and a worker that
# died would fail the run (its replacement's CPU would be missed).
mapfile -t nginx_all < <(nginx_pids)
[ "${#nginx_all[@]}" -ge 2 ] || { echo "nginx has no worker process" >&2; exit 1; }
nginx_body="$(curl -sf --max-time 2 "$nginx_url")"
pb_size="$(curl -s --max-time 2 -o /dev/null -w '%{size_header}+%{size_download}' -H "X-API-Key: $key" "$pb_url")"
nginx_size="$(curl -s --max-time 2 -o /dev/null -w '%{size_header}+%{size_download}' "$nginx_url")"
echo "pricebeast response: $pb_size bytes (head+body), body: $body"
echo "nginx response:      $nginx_size bytes (head+body), body: $nginx_body"
[ "${#nginx_body}" -eq "${#body}" ] || { echo "nginx's body differs in size from pricebeast's" >&2; exit 1; }

# --- load ----------------------------------------------------------------------------------------
# One wrk run; prints "requests rps cpu_us_per_request user_percent non2xx errors".
run_load() {
    local url="$1" seconds="$2"
    shift 2
    local pids=("$@") before after out requests rps non2xx errors
    read -r -a before < <(pid_cpu_ticks "${pids[@]}")
    out="$("${load_cpu[@]}" wrk -t1 -c"$connections" -d"${seconds}s" --timeout 5s -H "X-API-Key: $key" "$url")"
    read -r -a after < <(pid_cpu_ticks "${pids[@]}")
    read -r requests rps non2xx errors < <(awk '
        /requests in/ { r = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { n = $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i++) e += $i }
        END { print r + 0, rps + 0, n + 0, e + 0 }' <<<"$out")
    awk -v r="$requests" -v rps="$rps" -v t="$((after[0] - before[0]))" -v u="$((after[1] - before[1]))" \
        -v hz="$(getconf CLK_TCK)" -v n="$non2xx" -v e="$errors" \
        'BEGIN { printf "%d %.0f %.3f %.0f %d %d\n", r, rps, (r > 0 ? t * 1e6 / hz / r : 0), (t > 0 ? 100 * u / t : 0), n, e }'
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

echo "== load: wrk -t1 -c$connections -d${duration_s}s -H 'X-API-Key: ...' $symbol_path, $rounds rounds"
results="$work/results"
: >"$results"
printf '%-6s %-11s %12s %10s %14s %9s %8s %7s\n' round server requests rps cpu_us_per_req user_cpu non2xx errors
for round in $(seq "$rounds"); do
    # Alternate who goes first, so a drift in the machine's state does not favour one side.
    if [ $((round % 2)) -eq 1 ]; then order="pricebeast nginx"; else order="nginx pricebeast"; fi
    for server in $order; do
        if [ "$server" = pricebeast ]; then
            line="$(run_load "$pb_url" "$duration_s" "$pb_pid")"
        else
            line="$(run_load "$nginx_url" "$duration_s" "${nginx_all[@]}")"
        fi
        read -r requests rps cpu user non2xx errors <<<"$line"
        printf '%-6s %-11s %12s %10s %14s %8s%% %8s %7s\n' "$round" "$server" "$requests" "$rps" "$cpu" "$user" "$non2xx" "$errors"
        echo "$server $rps $cpu $non2xx" >>"$results"
    done
done

pb_rps="$(awk '$1 == "pricebeast" { print $2 }' "$results" | median)"
pb_cpu="$(awk '$1 == "pricebeast" { print $3 }' "$results" | median)"
ng_rps="$(awk '$1 == "nginx" { print $2 }' "$results" | median)"
ng_cpu="$(awk '$1 == "nginx" { print $3 }' "$results" | median)"
bad="$(awk '$4 > 0 { print $1 }' "$results" | sort -u | paste -sd' ')"

echo
echo "== medians over $rounds rounds (wrk -t1 -c$connections -d${duration_s}s, $cores cores)"
printf '%-11s %10s %14s\n' server rps cpu_us_per_req
printf '%-11s %10.0f %14.3f\n' pricebeast "$pb_rps" "$pb_cpu"
printf '%-11s %10.0f %14.3f\n' nginx "$ng_rps" "$ng_cpu"
awk -v a="$pb_rps" -v b="$ng_rps" -v c="$pb_cpu" -v d="$ng_cpu" 'BEGIN {
    printf "rps ratio  pricebeast/nginx: %.2f\n", (b > 0 ? a / b : 0)
    printf "cpu ratio  nginx/pricebeast: %.2f   (> 1: pricebeast is better)\n", (c > 0 ? d / c : 0)
}'
if [ -n "$bad" ]; then
    echo "non-2xx answers from: $bad (the figures above include them)" >&2
    exit 1
fi
