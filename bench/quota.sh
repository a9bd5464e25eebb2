#!/usr/bin/env bash
# What a quota costs the gateway: one Tessera, one checked route, and two sets of 100
# tokens, one with a quota (a billion a day: never spent here) and one without, loaded
# in turn with the same route, the same number of tokens and the same wrk settings.
# Reports each round's req/s and the ratio of the medians (goal ≥ 0.9).
# The setup is bench/gateway.sh's: server on core 0, wrk and the upstream on core 1.
#   bash bench/quota.sh [ROUNDS=5] [DURATION=5]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; DURATION=${2:-5}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --bin tessera --example bench_upstream
BIN=target/release/tessera
W=$(mktemp -d /tmp/tessera-quota.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; exit 1; }
taskset -c 1 target/release/examples/bench_upstream 127.0.0.1:29101 & PIDS+=($!); wait_port 29101
TESSERA_ADMIN_PASSWORD=benchmark-password taskset -c 0 $BIN serve --database-url "sqlite://$W/t.db" \
  --admin-addr 127.0.0.1:29180 --gateway-addr 127.0.0.1:29100 2>>"$W/log" & PIDS+=($!)
wait_port 29180; wait_port 29100
a=http://127.0.0.1:29180
curl -sf -c "$W/jar" -H 'Content-Type: application/json' -d '{"username":"admin","password":"benchmark-password"}' $a/api/v1/login >/dev/null
curl -sf -b "$W/jar" -H "Origin: $a" -X PUT -H 'Content-Type: application/json' $a/api/v1/settings/token-policy \
  -d '{"default_expiry_days":30,"max_expiry_days":365,"allow_never_expires":false,"max_tokens_per_account":500}' >/dev/null
curl -sf -b "$W/jar" -H "Origin: $a" -X PUT -H 'Content-Type: application/json' $a/api/v1/gateway/config -d '{
 "services": [{"name": "up", "upstreams": ["http://127.0.0.1:29101"]}],
 "routes": [{"name": "checked", "service": "up", "path_prefix": "/checked"}]}' >/dev/null
for set in quota plain; do
  extra=; [ "$set" = quota ] && extra=',"quota":{"limit":1000000000,"refill":"daily"}'
  for i in $(seq 100); do
    curl -sf -b "$W/jar" -H "Origin: $a" -H 'Content-Type: application/json' $a/api/v1/tokens \
      -d "{\"name\":\"$set-$i\"$extra}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
  done > "$W/$set.keys"
  cat > "$W/$set.lua" <<LUA
local keys, requests, i = {}, {}, 0
for line in io.lines("$W/$set.keys") do keys[#keys + 1] = line end
init = function(args) for n, key in ipairs(keys) do requests[n] = wrk.format("GET", nil, { ["X-API-KEY"] = key }) end end
request = function() i = i % #requests + 1 return requests[i] end
LUA
done
run() { taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" -s "$W/$1.lua" http://127.0.0.1:29100/checked | awk '/Requests\/sec/ {print $2}'; }
run quota >/dev/null; run plain >/dev/null # warm up
Q=(); P=()
for r in $(seq "$ROUNDS"); do
  Q+=("$(run quota)"); P+=("$(run plain)")
  echo "round $r: quota ${Q[-1]} req/s, none ${P[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
mq=$(median "${Q[@]}"); mp=$(median "${P[@]}")
echo
printf '| | median req/s |\n|---|---|\n| with a quota | %.0f |\n| without | %.0f |\n| quota ÷ without | %.2f |\n' "$mq" "$mp" "$(echo "$mq / $mp" | bc -l)"
