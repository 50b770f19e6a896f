#!/usr/bin/env bash
# pricebeast's HTTPS against nginx's, under the same load, in the same run: a figure is a ratio against a reference measured beside it.
#
# Both serve the same ECDSA P-256 certificate (made by `pricebeast tls self-signed`) with TLS 1.3
# and 1.2, session tickets on. nginx answers /v1/price with a fixed body fetched from the running
# pricebeast (same bytes, same Content-Type), so the comparison is "our whole request path over
# TLS" against "the cheapest answer nginx's TLS can give". Two loads, each alternated between the
# servers and repeated:
#
#   keep-alive   wrk -c CONNECTIONS over HTTPS: requests per second and server CPU per request
#                (record encryption, the request path).
#   handshakes   wrk -c HANDSHAKE_CONNECTIONS with `Connection: close`: every request on a new
#                connection with a full handshake (wrk keeps no sessions), so CPU per request is
#                CPU per handshake (ECDHE, the ECDSA signature, the tickets sent).
#
# Setups (-m), for a two-core machine, as scripts/bench-http.sh:
#   pinned (default)  server on core 0 (pricebeast --shards 1, one nginx worker), wrk on core 1.
#   shared            2 shards / 2 nginx workers (reuseport) and wrk, all free on both cores.
#
#   scripts/bench-https.sh [-m pinned|shared] [-d SECONDS] [-r ROUNDS] [-c CONNECTIONS]
#                          [-n HANDSHAKE_CONNECTIONS] [-w WARMUP_SECONDS] [-b PRICEBEAST_BINARY]
#
# Prints a table per round, the medians, and ratios where > 1 means pricebeast is better:
# pricebeast/nginx requests per second; nginx/pricebeast CPU per request (or handshake). The
# negotiated protocol and cipher of each server are printed first, so both are known to do the
# same work. Every load is aimed at 127.0.0.1 and bounded in time; both servers stop on exit.
set -euo pipefail

duration_s=10
rounds=3
connections=64
handshake_connections=16
warmup_s=2
mode=pinned
binary=""
usage() {
    echo "usage: $0 [-m pinned|shared] [-d SECONDS] [-r ROUNDS] [-c CONNECTIONS] [-n HANDSHAKE_CONNECTIONS] [-w WARMUP_SECONDS] [-b PRICEBEAST_BINARY]" >&2
    exit 2
}
while getopts "d:r:c:n:w:m:b:h" opt; do
    case "$opt" in
        d) duration_s="$OPTARG" ;;
        r) rounds="$OPTARG" ;;
        c) connections="$OPTARG" ;;
        n) handshake_connections="$OPTARG" ;;
        w) warmup_s="$OPTARG" ;;
        m) mode="$OPTARG" ;;
        b) binary="$OPTARG" ;;
        *) usage ;;
    esac
done
case "$mode" in pinned | shared) ;; *) usage ;; esac
for n in "$duration_s" "$rounds" "$connections" "$handshake_connections" "$warmup_s"; do
    [[ "$n" =~ ^[0-9]+$ ]] || usage
done
if [ "$duration_s" -lt 1 ] || [ "$duration_s" -gt 600 ] || [ "$rounds" -lt 1 ] || [ "$rounds" -gt 20 ] ||
    [ "$connections" -lt 1 ] || [ "$connections" -gt 10000 ] || [ "$handshake_connections" -lt 1 ] ||
    [ "$handshake_connections" -gt 1000 ] || [ "$warmup_s" -gt 60 ]; then
    usage
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib/bench.sh
source "$root/scripts/lib/bench.sh"

# --- tools ---------------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]}"
    # A policy-rc.d that says no keeps Debian from starting a packaged nginx on port 80.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    ok=1
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || ok=""
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ -n "$ok" ] || { echo "could not install ${need[*]}" >&2; exit 1; }
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

cores="$(nproc)"
if [ "$mode" = shared ]; then
    [ "$cores" -ge 2 ] || { echo "-m shared needs two cores; this machine has $cores" >&2; exit 2; }
    shards=2
    nginx_workers=2
    server_cpu=()
    load_cpu=()
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

pricebeast="$(pricebeast_binary "$root" "$binary")"
work="$(mktemp -d /tmp/bench-https.XXXXXX)"
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

# --- certificate and pricebeast ------------------------------------------------------------------
"$pricebeast" tls self-signed --out "$work/tls" >/dev/null
key="$("$pricebeast" keys new --tier partner --name bench-https --keys-file "$work/keys.toml")"
cat >"$work/pricebeast.toml" <<EOF
[server]
http = ""
https = "127.0.0.1:0"
udp = "127.0.0.1:0"
shards = $shards
pin_shards = true
[admin]
addr = "127.0.0.1:0"
[tls]
cert_file = "$work/tls/cert.pem"
key_file = "$work/tls/key.pem"
[keys]
file = "$work/keys.toml"
EOF
echo "== starting pricebeast --shards $shards (HTTPS only)"
(cd "$work" && exec "${server_cpu[@]}" "$pricebeast" serve --config "$work/pricebeast.toml") >"$work/pricebeast.log" 2>&1 &
pb_pid=$!
pb_port=""
for _ in $(seq 100); do
    pb_port="$(grep -o 'https=127\.0\.0\.1:[0-9]*' "$work/pricebeast.log" | head -1 | cut -d: -f2 || true)"
    [ -n "$pb_port" ] && break
    kill -0 "$pb_pid" 2>/dev/null || { cat "$work/pricebeast.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$pb_port" ] || { echo "pricebeast did not report its HTTPS port" >&2; cat "$work/pricebeast.log" >&2; exit 1; }
path="/v1/price?symbol=BTC-USD"
pb_url="https://127.0.0.1:$pb_port$path"
curl_tls=(--cacert "$work/tls/cert.pem" -sf --max-time 2)
body=""
for _ in $(seq 100); do
    body="$(curl "${curl_tls[@]}" -H "X-API-Key: $key" "$pb_url")" && break
    body=""
    sleep 0.1
done
[ -n "$body" ] || { echo "pricebeast never served $path over HTTPS" >&2; exit 1; }
content_type="$(curl "${curl_tls[@]}" -o /dev/null -w '%{content_type}' -H "X-API-Key: $key" "$pb_url")"
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
    keepalive_requests 100000000;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    ssl_certificate $work/tls/cert.pem;
    ssl_certificate_key $work/tls/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:10m;
    server {
        listen 127.0.0.1:$nginx_port ssl$nginx_listen_flags;
        location /v1/price {
            default_type $content_type;
            add_header Cache-Control no-store;
            return 200 '$body';
        }
    }
}
EOF
echo "== starting nginx ($nginx_workers worker(s)) with ssl on 127.0.0.1:$nginx_port"
"${server_cpu[@]}" "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx/logs/stdout.log" 2>&1 &
nginx_pid=$!
nginx_url="https://127.0.0.1:$nginx_port$path"
for _ in $(seq 100); do
    curl "${curl_tls[@]}" -o /dev/null "$nginx_url" && break
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/nginx/logs/"* >&2; exit 1; }
    sleep 0.1
done
nginx_all=()
for _ in $(seq 50); do
    mapfile -t nginx_all < <(echo "$nginx_pid"; pgrep -P "$nginx_pid" || true)
    [ "${#nginx_all[@]}" -lt $((1 + nginx_workers)) ] || break
    sleep 0.1
done
[ "${#nginx_all[@]}" -ge $((1 + nginx_workers)) ] || { echo "nginx has fewer than $nginx_workers workers" >&2; exit 1; }
nginx_body="$(curl "${curl_tls[@]}" "$nginx_url")"
[ "${#nginx_body}" -eq "${#body}" ] || { echo "nginx's body differs in size from pricebeast's" >&2; exit 1; }
for pair in "pricebeast:$pb_port" "nginx:$nginx_port"; do
    negotiated="$(openssl s_client -connect "127.0.0.1:${pair#*:}" -alpn http/1.1 </dev/null 2>/dev/null |
        awk '/^New, / { print $2, $5 } /^ALPN protocol:/ { print "alpn", $3 }' | paste -sd' ')"
    echo "== ${pair%%:*}: $negotiated"
done
echo "== body ($(( ${#body} )) bytes): $body"

# --- load ----------------------------------------------------------------------------------------
# One wrk run: "requests rps cpu_us_per_request non2xx errors".
run_load() {
    local url="$1" seconds="$2" conns="$3" close="$4"
    shift 4
    local pids=("$@") files=() pid before after out header=()
    for pid in "${pids[@]}"; do files+=("/proc/$pid/stat"); done
    [ "$close" = yes ] && header=(-H "Connection: close")
    read -r -a before < <(cpu_ticks "${files[@]}")
    out="$("${load_cpu[@]}" wrk -t1 -c"$conns" -d"${seconds}s" --timeout 5s -H "X-API-Key: $key" "${header[@]}" "$url")"
    read -r -a after < <(cpu_ticks "${files[@]}")
    awk -v t="$((after[0] - before[0]))" -v hz="$(getconf CLK_TCK)" '
        /requests in/ { r = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { n = $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i++) e += $i }
        END { printf "%d %.0f %.3f %d %d\n", r, rps, (r > 0 ? t * 1e6 / hz / r : 0), n + 0, e + 0 }' <<<"$out"
}

results="$work/results"
: >"$results"
bench() {
    local load="$1" conns="$2" close="$3" round order server line
    if [ "$warmup_s" -gt 0 ]; then
        run_load "$pb_url" "$warmup_s" "$conns" "$close" "$pb_pid" >/dev/null
        run_load "$nginx_url" "$warmup_s" "$conns" "$close" "${nginx_all[@]}" >/dev/null
    fi
    echo
    echo "== $load: wrk -t1 -c$conns -d${duration_s}s$([ "$close" = yes ] && echo " -H 'Connection: close'"), $rounds rounds"
    printf '%-6s %-11s %12s %10s %14s %8s %7s\n' round server requests rps cpu_us_per_req non2xx errors
    for round in $(seq "$rounds"); do
        if [ $((round % 2)) -eq 1 ]; then order="pricebeast nginx"; else order="nginx pricebeast"; fi
        for server in $order; do
            if [ "$server" = pricebeast ]; then
                line="$(run_load "$pb_url" "$duration_s" "$conns" "$close" "$pb_pid")"
            else
                line="$(run_load "$nginx_url" "$duration_s" "$conns" "$close" "${nginx_all[@]}")"
            fi
            read -r requests rps cpu non2xx errors <<<"$line"
            printf '%-6s %-11s %12s %10s %14s %8s %7s\n' "$round" "$server" "$requests" "$rps" "$cpu" "$non2xx" "$errors"
            echo "$load $server $rps $cpu $non2xx" >>"$results"
        done
    done
}

handshakes_before="$(curl -sf --max-time 2 "http://$(grep -o 'admin=[0-9.:]*' "$work/pricebeast.log" | head -1 | cut -d= -f2)/admin/stress-stats" |
    grep -o '"tls_handshakes":[0-9]*' | cut -d: -f2 || echo 0)"
bench keep-alive "$connections" no
bench handshakes "$handshake_connections" yes
handshakes_after="$(curl -sf --max-time 2 "http://$(grep -o 'admin=[0-9.:]*' "$work/pricebeast.log" | head -1 | cut -d= -f2)/admin/stress-stats" |
    grep -o '"tls_handshakes":[0-9]*' | cut -d: -f2 || echo 0)"

echo
echo "== medians over $rounds rounds ($setup; $cores cores)"
printf '%-11s %-11s %10s %14s\n' load server rps cpu_us_per_req
for load in keep-alive handshakes; do
    for server in pricebeast nginx; do
        rps="$(awk -v l="$load" -v s="$server" '$1 == l && $2 == s { print $3 }' "$results" | median)"
        cpu="$(awk -v l="$load" -v s="$server" '$1 == l && $2 == s { print $4 }' "$results" | median)"
        printf '%-11s %-11s %10.0f %14.3f\n' "$load" "$server" "$rps" "$cpu"
        echo "$load $server $rps $cpu" >>"$work/medians"
    done
done
awk '
    { rps[$1 " " $2] = $3; cpu[$1 " " $2] = $4 }
    END {
        for (i = 1; i <= 2; i++) {
            l = (i == 1 ? "keep-alive" : "handshakes")
            printf "%-10s rps ratio pricebeast/nginx: %.2f   cpu ratio nginx/pricebeast: %.2f   (> 1: pricebeast is better)\n",
                l, (rps[l " nginx"] > 0 ? rps[l " pricebeast"] / rps[l " nginx"] : 0),
                (cpu[l " pricebeast"] > 0 ? cpu[l " nginx"] / cpu[l " pricebeast"] : 0)
        }
    }' "$work/medians"
echo "== pricebeast completed $((handshakes_after - handshakes_before)) TLS handshakes during the runs"
bad="$(awk '$5 > 0 { print $1 "/" $2 }' "$results" | sort -u | paste -sd' ')"
if [ -n "$bad" ]; then
    echo "non-2xx answers from: $bad (the figures above include them)" >&2
    exit 1
fi
