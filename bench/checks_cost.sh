#!/usr/bin/env bash
# What the checks cost a request: one Tessera, its `auth: token` route and its `auth: none`
# route loaded in turn (the same requests, keys included), and for each run the server's
# CPU time a request by thread (user/system µs, from /proc/PID/task/*/stat). With
# PROFILE=1, each route is also sampled with `perf record` (cpu-clock where the machine
# has no hardware counters) and the symbols' time a request is printed side by side.
# The setup is bench/gateway.sh's: server on core 0, wrk and the upstream on core 1.
#   bash bench/checks_cost.sh [ROUNDS=4] [DURATION=5]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-4}; DURATION=${2:-5}
cargo build --release --quiet --bin tessera --example seed_tokens --example bench_upstream
BIN=target/release/tessera
W=$(mktemp -d /tmp/tessera-checks.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; exit 1; }
taskset -c 1 target/release/examples/bench_upstream 127.0.0.1:29001 & PIDS+=($!); wait_port 29001
TESSERA_ADMIN_PASSWORD=benchmark-password taskset -c 0 $BIN serve --database-url "sqlite://$W/t.db" \
  --admin-addr 127.0.0.1:29080 --gateway-addr 127.0.0.1:29000 2>>"$W/log" & TP=$!; PIDS+=($TP)
wait_port 29080; wait_port 29000
a=http://127.0.0.1:29080
curl -sf -c "$W/jar" -H 'Content-Type: application/json' -d '{"username":"admin","password":"benchmark-password"}' $a/api/v1/login >/dev/null
curl -sf -b "$W/jar" -H "Origin: $a" -X PUT -H 'Content-Type: application/json' $a/api/v1/gateway/config -d '{
 "services": [{"name": "up", "upstreams": ["http://127.0.0.1:29001"]}],
 "routes": [{"name": "checked", "service": "up", "path_prefix": "/checked"},
            {"name": "open", "service": "up", "path_prefix": "/open", "auth": "none"}]}' >/dev/null
target/release/examples/seed_tokens "$W/t.db" 1000 "$W/keys.txt" 1000 2>>"$W/log"
cat > "$W/keys.lua" <<LUA
local keys, requests, i = {}, {}, 0
for line in io.lines("$W/keys.txt") do keys[#keys + 1] = line end
init = function(args) for n, key in ipairs(keys) do requests[n] = wrk.format("GET", nil, { ["X-API-KEY"] = key }) end end
request = function() i = i % #requests + 1 return requests[i] end
LUA
# CPU ticks (user, system) by thread name.
threads() { for t in /proc/$TP/task/*; do echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14, $15}' "$t/stat")"; done |
  awk '{u[$1] += $2; s[$1] += $3} END {for (k in u) print k, u[k], s[k]}' | sort; }
run() { # $1 = route
  threads > "$W/before"
  if [ -n "${PROFILE:-}" ]; then perf record -q -F 1000 -p $TP -o "$W/perf.$1" -- sleep "$DURATION" 2>/dev/null & PP=$!; fi
  taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" -s "$W/keys.lua" "http://127.0.0.1:29000/$1" > "$W/wrk.out"
  threads > "$W/after"; [ -n "${PROFILE:-}" ] && wait $PP
  n=$(awk '/requests in/ {print $1}' "$W/wrk.out"); echo "$n" > "$W/n.$1"
  join "$W/before" "$W/after" | awk -v n="$n" -v r="$1" -v hz="$(getconf CLK_TCK)" -v rps="$(awk '/Requests\/sec/ {print $2}' "$W/wrk.out")" '
    { du = ($4 - $2) * 1e6 / hz / n; ds = ($5 - $3) * 1e6 / hz / n; tu += du; ts += ds
      if (du + ds > 0.05) by = by sprintf(" %s %.2f/%.2f", $1, du, ds) }
    END { printf "%-8s %8.0f req/s  user %.2f  sys %.2f  total %.2f µs a request |%s\n", r, rps, tu, ts, tu + ts, by }'
}
run checked >/dev/null; run open >/dev/null # warm up
for _ in $(seq "$ROUNDS"); do run checked; run open; done
if [ -n "${PROFILE:-}" ]; then
  # µs a request by symbol (1,000 samples a second: a sample is 1,000 µs), checked first.
  for r in checked open; do
    perf report -i "$W/perf.$r" --no-children --sort comm,sym -n --stdio 2>/dev/null |
      awk -v n="$(cat "$W/n.$r")" '$2 ~ /^[0-9]+$/ { s = ""; for (i = 5; i <= NF; i++) s = s " " $i; printf "%s%s\t%.3f\n", $3, s, $2 * 1000 / n }' | sort > "$W/sym.$r"
  done
  echo "µs a request: checked, open, difference — symbol"
  join -t$'\t' -a1 -a2 -e0 -o 0,1.2,2.2 "$W/sym.checked" "$W/sym.open" |
    awk -F'\t' '{ printf "%7.3f %7.3f %7.3f  %s\n", $2, $3, $2 - $3, substr($1, 1, 100) }' | sort -k3 -rn | head -30
fi
