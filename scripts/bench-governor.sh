#!/usr/bin/env bash
# What the governor buys partners under a public flood, on this machine.
#
# One server, three loads from the built-in stress client, all at 127.0.0.1:
#   - partner UDP at a fixed rate (open loop, PARTNER_UDP queries/s), as the seed's partners use it;
#   - partner HTTP at a fixed rate (open loop, PARTNER_HTTP requests/s);
#   - a public HTTP flood: FLOOD_CONNS keep-alive connections asking as fast as they can (an open
#     loop at far more than the server carries), with a public key whose limits never bind, so
#     only the governor stands between the flood and the partners.
# Three runs of SECONDS each: the partners alone (their unloaded latency), then partners + flood
# with the governor on, then with it off. The two profiles differ in `governor` only (a profiles
# file written here, switched through POST /admin/system-mode between runs). Each run reports the
# partners' p50/p99 and errors, the flood's answers by status, the governor's sheds, and the
# server's CPU per answered request.
#
#   scripts/bench-governor.sh [-d SECONDS] [-u PARTNER_UDP] [-t PARTNER_HTTP] [-f FLOOD_CONNS]
#                             [-s shared|pinned] [-g SHED_ABOVE_US] [-p SHED_PAUSE_MS] [-b PRICEBEAST_BINARY]
#
# -g and -p set governor.shed_above_us and governor.shed_pause_ms (default: the config's).
#
# Setups (-s): shared (default): the server's 2 shards and every load on both cores, as on a busy
# host; pinned: the server (1 shard) on core 0, every load on core 1.
#
# The goal: partner p99 with the flood and the governor on within 2x of the unloaded p99, and no
# partner error. The table says whether this machine reached it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
. "$here/lib/bench.sh"

seconds=10 partner_udp=2000 partner_http=500 flood_conns=256 setup=shared binary="" governor=""
while getopts "d:u:t:f:s:g:p:b:" opt; do
    case "$opt" in
        d) seconds="$OPTARG" ;;
        u) partner_udp="$OPTARG" ;;
        t) partner_http="$OPTARG" ;;
        f) flood_conns="$OPTARG" ;;
        s) setup="$OPTARG" ;;
        g) governor="$governor"$'\n'"shed_above_us = $OPTARG" ;;
        p) governor="$governor"$'\n'"shed_pause_ms = $OPTARG" ;;
        b) binary="$OPTARG" ;;
        *) echo "usage: $0 [-d SECONDS] [-u PARTNER_UDP] [-t PARTNER_HTTP] [-f FLOOD_CONNS] [-s shared|pinned] [-b BINARY]" >&2; exit 2 ;;
    esac
done
case "$setup" in shared|pinned) ;; *) echo "-s must be shared or pinned" >&2; exit 2 ;; esac
bin="$(pricebeast_binary "$root" "$binary")"
work="$(mktemp -d)"
server_pid=""
trap 'stop "$server_pid"; rm -rf "$work"' EXIT
cd "$work"

http=127.0.0.1:18480 udp=127.0.0.1:18481 admin=127.0.0.1:18482
"$bin" keys new --tier partner --name partner --keys-file keys.toml >partner.key
"$bin" keys new --tier public --name flood --qps 100000000 --burst 100000000 --monthly-cap 1000000000000 \
    --keys-file keys.toml >public.key
cat >profiles.toml <<EOF
[governor-on]
governor = true
log_level = "warn"
[governor-off]
governor = false
log_level = "warn"
EOF
cat >config.toml <<EOF
[server]
http = "$http"
udp = "$udp"
[admin]
addr = "$admin"
[keys]
file = "keys.toml"
[usage]
store = "memory"
[profiles]
file = "profiles.toml"
active = "governor-on"
[governor]$governor
EOF
# Plans: one level each, open loop, SECONDS long.
level() { printf '[[levels]]\nconcurrency = %s\nrate_per_s = %s\nduration_ms = %s\n' "$1" "$2" $((seconds * 1000)); }
{ printf 'protocol = "udp"\nwarmup_pct = 10\ntimeout_ms = 1000\n[mix]\nsymbols = ["BTC-USD", "ETH-USD"]\ntier = "partner"\n'; level 2 "$partner_udp"; } >udp.toml
{ printf 'protocol = "http"\nwarmup_pct = 10\ntimeout_ms = 5000\n[mix]\nsymbols = ["BTC-USD", "ETH-USD"]\ntier = "partner"\n'; level 16 "$partner_http"; } >http.toml
{ printf 'protocol = "http"\nwarmup_pct = 10\ntimeout_ms = 5000\nlevel_time_max_ms = %s\n[mix]\nsymbols = ["BTC-USD", "ETH-USD"]\ntier = "public"\n' $((seconds * 1000 + 1000)); level "$flood_conns" 400000; } >flood.toml

server_cpu=(taskset -c 0,1) load_cpu=(taskset -c 0,1) shards=2
if [ "$setup" = pinned ]; then server_cpu=(taskset -c 0) load_cpu=(taskset -c 1) shards=1; fi
"${server_cpu[@]}" "$bin" serve --config config.toml --shards "$shards" >server.log 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -sf "http://$http/ready" >/dev/null 2>&1 && break; sleep 0.1; done

# `stress` exits non-zero when a level misses a threshold; these plans have none, but a flood's
# errors must not end the script.
load() { "${load_cpu[@]}" "$bin" stress --plan "$1" --target "$2" --key "$3" --out "$4" >"$4.log" 2>&1 || true; }

# p50 p99 requests errors of one run's single level, from its summary.json.
figures() {
    python3 - "$1/summary.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
level = doc["levels"][0]
lat, counts = level["latency"], level["counts"]
errors = counts["requests"] - counts["successes"]
codes = counts["http_status"] or counts["udp_status"]
print(f'{lat["p50_ms"]:.3f} {lat["p99_ms"]:.3f} {counts["requests"]} {errors} {json.dumps(codes, separators=(",", ":"))}')
EOF
}

run() {
    local name="$1" flood="$2" before after sheds0 sheds1
    curl -sf -XPOST "http://$admin/admin/stress-reset" >/dev/null
    before=$(cpu_ticks "/proc/$server_pid/stat" | cut -d' ' -f1)
    sheds0=$(curl -sf "http://$admin/admin/stress-stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["streams"]["governor_sheds"])')
    load udp.toml "$udp" "$(cat partner.key)" "udp-$name" &
    local udp_load=$!
    load http.toml "http://$http" "$(cat partner.key)" "http-$name" &
    local http_load=$!
    local flood_load=""
    if [ "$flood" = yes ]; then
        load flood.toml "http://$http" "$(cat public.key)" "flood-$name" &
        flood_load=$!
    fi
    wait "$udp_load" "$http_load" ${flood_load:+"$flood_load"}
    after=$(cpu_ticks "/proc/$server_pid/stat" | cut -d' ' -f1)
    local stats
    stats=$(curl -sf "http://$admin/admin/stress-stats")
    sheds1=$(echo "$stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["streams"]["governor_sheds"])')
    local answered
    answered=$(echo "$stats" | python3 -c 'import json,sys; c=json.load(sys.stdin)["counters"]; print(c["tcp_requests"] + c["udp_requests"])')
    local hz us
    hz=$(getconf CLK_TCK)
    us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$answered" 'BEGIN { printf "%.2f", n ? t / hz * 1e6 / n : 0 }')
    read -r u50 u99 un ue ucodes <<<"$(figures "udp-$name")"
    read -r h50 h99 hn he hcodes <<<"$(figures "http-$name")"
    local fcodes="-"
    [ "$flood" = yes ] && fcodes="$(figures "flood-$name" | cut -d' ' -f3,5)"
    printf '%-14s %8s %8s %6s %8s %8s %6s %8s %9s  %s\n' "$name" "$u50" "$u99" "$ue" "$h50" "$h99" "$he" "$((sheds1 - sheds0))" "$us" "$fcodes"
    echo "$name $u99 $h99 $ue $he" >>results.txt
}

echo "== setup: $setup ($shards shard(s)); partner UDP ${partner_udp}/s, partner HTTP ${partner_http}/s, flood $flood_conns connections; ${seconds}s a run"
printf '%-14s %8s %8s %6s %8s %8s %6s %8s %9s  %s\n' run udp_p50 udp_p99 u_err http_p50 http_p99 h_err sheds "us/answer" "flood: requests statuses"
curl -sf -XPOST "http://$admin/admin/system-mode?mode=governor-on" >/dev/null
run unloaded no
run flood-gov-on yes
curl -sf -XPOST "http://$admin/admin/system-mode?mode=governor-off" >/dev/null
run flood-gov-off yes
python3 - results.txt <<'EOF'
import sys
rows = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in open(sys.argv[1])}
base = rows["unloaded"]
for name in ("flood-gov-on", "flood-gov-off"):
    r = rows[name]
    udp, http = r[0] / base[0], r[1] / base[1]
    ok = udp <= 2 and http <= 2 and r[2] == 0 and r[3] == 0
    print(f"{name}: partner p99 x{udp:.2f} (UDP), x{http:.2f} (HTTP) of unloaded; errors {int(r[2])}/{int(r[3])}; goal (<= 2x, 0 errors) {'met' if ok else 'not met'}")
EOF
