#!/usr/bin/env bash
# Several nodes on PostgreSQL, in one run:
#   1. the propagation delay of a revocation: from the answer to DELETE on node A to the
#      first refusal of the token on node B (examples/propagation.rs, N revocations,
#      500 by default): p50, p99, maximum;
#   2. the gateway's throughput with the same 1,000 tokens on PostgreSQL (node A) and on
#      SQLite (the database A's was copied from, with `tessera admin migrate-db`), in
#      interleaved rounds (wrk, 64 connections, as bench/gateway.sh; server on core 0,
#      wrk and the upstream on core 1): a cache hit must not care where the store is.
# Needs: PostgreSQL where this user may create databases (PGURL, by default
# postgres://postgres@127.0.0.1:5432), wrk (apt-get install wrk), 2 cores.
#   bash bench/cluster.sh [N=500] [ROUNDS=5] [DURATION=5]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}; ROUNDS=${2:-5}; DURATION=${3:-5}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=tessera_bench_cluster
W=$(mktemp -d /tmp/tessera-cluster.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin tessera --example seed_tokens --example bench_upstream --example propagation
BIN=target/release/tessera
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
serve() { # $1 = database URL, $2 = admin port, $3 = gateway port, $4… more flags; appends the pid to PIDS
  TESSERA_ADMIN_PASSWORD=benchmark-password taskset -c 0 $BIN serve --database-url "$1" \
    --admin-addr 127.0.0.1:$2 --gateway-addr 127.0.0.1:$3 "${@:4}" 2>>"$W/log" & PIDS+=($!)
  wait_port $2; wait_port $3
}

taskset -c 1 target/release/examples/bench_upstream 127.0.0.1:29301 & PIDS+=($!); wait_port 29301
# SQLite: the gateway's route and 1,000 tokens, as bench/gateway.sh has them.
serve "sqlite://$W/t.db" 29280 29200
a=http://127.0.0.1:29280
curl -sf -c "$W/jar" -H 'Content-Type: application/json' -d '{"username":"admin","password":"benchmark-password"}' $a/api/v1/login >/dev/null
curl -sf -b "$W/jar" -H "Origin: $a" -X PUT -H 'Content-Type: application/json' $a/api/v1/gateway/config -d '{
 "services": [{"name": "up", "upstreams": ["http://127.0.0.1:29301"]}],
 "routes": [{"name": "checked", "service": "up", "path_prefix": "/checked"}]}' >/dev/null
target/release/examples/seed_tokens "$W/t.db" 1000 "$W/keys.txt" 1000 2>>"$W/log"
# PostgreSQL: the same database, copied.
psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
$BIN admin migrate-db --from "sqlite://$W/t.db" --to "$PGURL/$DB" 2>>"$W/log"
serve "$PGURL/$DB" 29180 29100
# B believes the propagation client's X-Forwarded-For (see examples/propagation.rs).
serve "$PGURL/$DB" 29181 29101 --trusted-proxies 127.0.0.1/32

echo "== propagation of a revocation, node A to node B ($N revocations)"
read -r n p50 p99 max < <(target/release/examples/propagation http://127.0.0.1:29180 http://127.0.0.1:29181 benchmark-password "$N")
printf "revocations %s  p50 %s ms  p99 %s ms  max %s ms\n" "$n" "$p50" "$p99" "$max"

echo "== gateway, 1,000 tokens: PostgreSQL ÷ SQLite ($ROUNDS rounds of ${DURATION} s)"
cat > "$W/keys.lua" <<LUA
local keys, requests, i = {}, {}, 0
for line in io.lines("$W/keys.txt") do keys[#keys + 1] = line end
init = function(args) for n, key in ipairs(keys) do requests[n] = wrk.format("GET", nil, { ["X-API-KEY"] = key }) end end
request = function() i = i % #requests + 1 return requests[i] end
LUA
rps() { taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" -s "$W/keys.lua" "$1" | awk '/Requests\/sec/ {print $2}'; }
# Warm both, then measure in turn (each goes first in half the rounds).
rps http://127.0.0.1:29200/checked >/dev/null; rps http://127.0.0.1:29100/checked >/dev/null
# Node B idles on core 0 too; stop it so that both runs have the core to themselves.
kill "${PIDS[-1]}"
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then s=$(rps http://127.0.0.1:29200/checked); p=$(rps http://127.0.0.1:29100/checked)
  else p=$(rps http://127.0.0.1:29100/checked); s=$(rps http://127.0.0.1:29200/checked); fi
  echo "$s $p" | tee -a "$W/rounds"
done
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf "SQLite %.0f req/s  PostgreSQL %.0f req/s  PostgreSQL ÷ SQLite %.2f (median of the rounds' own ratios)\n" \
  "$(awk '{print $1}' "$W/rounds" | median)" "$(awk '{print $2}' "$W/rounds" | median)" \
  "$(awk '{print $2 / $1}' "$W/rounds" | median)"
