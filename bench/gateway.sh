#!/usr/bin/env bash
# Gateway load benchmark on loopback, in one run:
#   1. the raw upstream (examples/bench_upstream.rs answering 200 "ok"; UPSTREAM=nginx
#      for nginx's `return 200` instead);
#   2. nginx as a proxy checking X-API-KEY against a `map` of 1,000 keys, doing the
#      gateway's job: it forwards X-Forwarded-For/-Proto/-Host and the key's token and
#      account ids, as Tessera does (the comparison the goals are judged on), and, for
#      reference, the same proxy forwarding none of them;
#   3. the Tessera gateway with the same 1,000 tokens (auth: token route);
#   4. the Tessera gateway on an auth: none route;
#   5. a second Tessera gateway with 1,000,000 tokens in its database (the same 1,000 in use);
# and the memory per cached token (RSS growth while 100,000 more tokens get cached).
# The server under test is pinned to core 0 (taskset), wrk and the upstream to core 1;
# nginx runs with worker_processes 1. 64 connections, DURATION seconds each. Loopback runs
# on a shared VM swing widely from one run to the next (one server, one route, 6 s runs
# back to back: 36,000 to 65,000 req/s), so the six runs go in ROUNDS interleaved rounds;
# each figure is the median of its rounds, each ratio the median of the rounds' own
# ratios. Many short rounds (default 9 of 5 s) rather than few long ones: the two runs a
# ratio compares are closer in time, and a median of nine rounds is moved by fewer of them. Both Tessera servers run side by side on core 0 (only
# the one under load is busy), so the 1,000,000-token run is interleaved too.
# Each line also gives the server's CPU time a request (user and system, all its threads,
# from /proc/PID/stat): what the checks cost, whichever core set the pace of the run;
# and the two cores' idle time (median over rounds): a run whose core 1
# (the load generator's and the upstream's) has none left measures that core, not the
# server under test. With nginx as the upstream, Tessera's runs were such runs (core 1
# idle 0.2-2.6%, core 0 4-11%; nginx's the other way round): nginx's `return 200` took
# 4.9 µs of user time a request there, 15% of the core. Hence the lighter upstream.
# Needs: nginx, wrk (apt-get install nginx-light wrk), 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-9}
GAP=${GAP:-2}
WARM=${WARM:-40}
CONNS=64
WORK=$(mktemp -d /tmp/tessera-bench.XXXXXX)
UP_PORT=19001 NGX_PORT=19002 NGX_MIN_PORT=19003 ADMIN_PORT=19080 GW_PORT=19000 BIG_ADMIN_PORT=19081 BIG_GW_PORT=19010
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx is missing: apt-get install nginx-light" >&2; exit 1; }

echo "building (release)…" >&2
cargo build --release --quiet --bin tessera --example seed_tokens --example bench_upstream
BIN=target/release/tessera SEED=target/release/examples/seed_tokens UPSTREAM_BIN=target/release/examples/bench_upstream

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

nginx_conf() { # $1 = name, $2 = body of http { }
  mkdir -p "$WORK/$1/tmp"
  cat > "$WORK/$1/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1;
pid $WORK/$1/nginx.pid; error_log $WORK/$1/error.log crit;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $WORK/$1/tmp; proxy_temp_path $WORK/$1/tmp;
       fastcgi_temp_path $WORK/$1/tmp; uwsgi_temp_path $WORK/$1/tmp; scgi_temp_path $WORK/$1/tmp;
$2
}
CONF
}

# The upstream, on core 1 (with the load generator), the same for every run.
if [ "${UPSTREAM:-lean}" = nginx ]; then
  nginx_conf upstream "server { listen 127.0.0.1:$UP_PORT; location / { return 200 'ok'; } }"
  taskset -c 1 "$NGINX" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" & UP_PID=$!
else
  taskset -c 1 "$UPSTREAM_BIN" 127.0.0.1:$UP_PORT & UP_PID=$!
fi
PIDS+=($UP_PID)
wait_port $UP_PORT

# Tessera on core 0: one server with 1,000 tokens, one with 1,000,000.
start_tessera() { # $1 = database, $2 = admin port, $3 = gateway port; sets TESSERA_PID
  TESSERA_ADMIN_PASSWORD=benchmark-password taskset -c 0 "$BIN" serve --database-url "sqlite://$1" \
    --admin-addr 127.0.0.1:$2 --gateway-addr 127.0.0.1:$3 2>>"$WORK/tessera.log" &
  TESSERA_PID=$!; PIDS+=($TESSERA_PID)
  wait_port $2; wait_port $3
}
configure() { # $1 = admin port; prints the admin's account id (the seeded tokens' owner)
  local a=http://127.0.0.1:$1
  curl -sf -c "$WORK/jar" -H 'Content-Type: application/json' -d '{"username":"admin","password":"benchmark-password"}' $a/api/v1/login \
    | grep -o '"id":"acc_[^"]*"' | head -1 | cut -d'"' -f4
  curl -sf -b "$WORK/jar" -H "Origin: $a" -X PUT -H 'Content-Type: application/json' $a/api/v1/gateway/config -d "{
    \"services\": [{\"name\": \"up\", \"upstreams\": [\"http://127.0.0.1:$UP_PORT\"]}],
    \"routes\": [{\"name\": \"checked\", \"service\": \"up\", \"path_prefix\": \"/checked\"},
                 {\"name\": \"open\", \"service\": \"up\", \"path_prefix\": \"/open\", \"auth\": \"none\"}]}" >/dev/null
}
start_tessera "$WORK/tessera.db" $ADMIN_PORT $GW_PORT
SMALL_PID=$TESSERA_PID
MAP_ACCOUNT_ID=$(configure $ADMIN_PORT)
"$SEED" "$WORK/tessera.db" 1000 "$WORK/keys.txt" 1000 2>>"$WORK/tessera.log"
# Token values are deterministic: the big database's first 1,000 are the same 1,000 keys.
start_tessera "$WORK/big.db" $BIG_ADMIN_PORT $BIG_GW_PORT
BIG_PID=$TESSERA_PID
configure $BIG_ADMIN_PORT >/dev/null
"$SEED" "$WORK/big.db" 1000000 "$WORK/keys200k.txt" 200000 2>>"$WORK/tessera.log"
sync; sleep 3 # let the kernel write the seeded database back before measuring

# nginx as a key-checking proxy on core 0, with maps of the same 1,000 keys to the ids
# Tessera forwards (the seeded tokens' ids are tok_SEED and the key's line number).
# (A bucket of 128 bytes was too small for these 52-character keys: nginx warned that it
# could not build an optimal hash, in every run up to 42.)
{ echo "map_hash_bucket_size 256; map_hash_max_size 16384;"
  echo "map \$http_x_api_key \$api_token_id { default \"\";"
  awk '{ printf "  \"%s\" \"tok_SEED%022d\";\n", $1, NR - 1 }' "$WORK/keys.txt"; echo "}"
  echo "map \$http_x_api_key \$api_account_id { default \"\";"
  awk -v acc="$MAP_ACCOUNT_ID" '{ printf "  \"%s\" \"%s\";\n", $1, acc }' "$WORK/keys.txt"; echo "}"; } > "$WORK/map.conf"
proxy_conf() { # $1 = port, $2 = extra proxy_set_header lines
  echo "include $WORK/map.conf;
upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; }
server { listen 127.0.0.1:$1;
  location / { if (\$api_token_id = \"\") { return 401; }
    proxy_set_header X-API-KEY \"\"; $2
    proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://up; } }"
}
# The gateway's job: the headers Tessera sets, the same way (X-Forwarded-For replaced by
# the client's address, as Tessera does for a client that is not a trusted proxy).
nginx_conf proxy "$(proxy_conf $NGX_PORT 'proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $http_host;
    proxy_set_header X-Tessera-Token-Id $api_token_id; proxy_set_header X-Tessera-Account-Id $api_account_id;')"
nginx_conf proxy-min "$(proxy_conf $NGX_MIN_PORT '')"
taskset -c 0 "$NGINX" -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf" & NGX_PID=$!
taskset -c 0 "$NGINX" -p "$WORK/proxy-min" -c "$WORK/proxy-min/nginx.conf" & NGX_MIN_PID=$!
PIDS+=($NGX_PID $NGX_MIN_PID)
wait_port $NGX_PORT; wait_port $NGX_MIN_PORT

# wrk rotates over the keys, one a request. The requests are built once, in init: built
# for each request (wrk.format), they cost wrk's core so much that the load generator,
# not the server under test, set the pace of the runs that use keys.
lua() { cat > "$WORK/$1.lua" <<LUA
local keys, requests, i = {}, {}, 0
for line in io.lines("$2") do keys[#keys + 1] = line end
init = function(args)
  for n, key in ipairs(keys) do requests[n] = wrk.format("GET", nil, { ["X-API-KEY"] = key }) end
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
LUA
}
lua keys "$WORK/keys.txt"

# The cpu0 and cpu1 lines of /proc/stat.
cores() { grep -E '^cpu[01] ' /proc/stat; }
# CPU time (user + system, all threads, in clock ticks) a process has used.
HZ=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' /proc/"$1"/stat; }
run() { # $1 = url, $2 = lua script or "", $3 = pid of the server under test;
        # prints "req/s p50_ms p99_ms idle0_% idle1_% server_cpu_µs_a_request"
  local args=(-t1 -c$CONNS -d${DURATION}s --latency)
  [ -n "$2" ] && args+=(-s "$2")
  cores > "$WORK/cores.before"; local t0; t0=$(ticks "$3")
  taskset -c 1 wrk "${args[@]}" "$1" > "$WORK/wrk.out"
  cores > "$WORK/cores.after"; local t1; t1=$(ticks "$3")
  if grep -q "Non-2xx" "$WORK/wrk.out"; then echo "non-2xx answers from $1:" >&2; cat "$WORK/wrk.out" >&2; exit 1; fi
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps = $2 } $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    END { printf "%.0f %.3f %.3f", rps, p50, p99 }' "$WORK/wrk.out"
  # Idle (idle + iowait) as a share of each core's time over the run.
  paste -d' ' "$WORK/cores.before" "$WORK/cores.after" | awk '{
    n = NF / 2; total = 0 # user … steal (guest time is counted in user)
    for (i = 2; i <= 9; i++) total += $(i + n) - $i
    printf " %.1f", 100 * (($(n + 5) - $5) + ($(n + 6) - $6)) / total }'
  # The server's CPU time a request, in µs, whichever core bound the run.
  awk -v t=$((t1 - t0)) -v hz="$HZ" '/requests in/ { printf " %.2f", t * 1e6 / hz / $1 }' "$WORK/wrk.out"
  echo
}

one() { # $1 = which run, $2 = where its run line (see run) goes (default $WORK/$1.txt)
  case $1 in
    raw) run "http://127.0.0.1:$UP_PORT/" "" $UP_PID ;;
    nginx) run "http://127.0.0.1:$NGX_PORT/" "$WORK/keys.lua" $NGX_PID ;;
    nginxmin) run "http://127.0.0.1:$NGX_MIN_PORT/" "$WORK/keys.lua" $NGX_MIN_PID ;;
    tessera) run "http://127.0.0.1:$GW_PORT/checked" "$WORK/keys.lua" $SMALL_PID ;;
    # The same requests (keys included; an auth: none route ignores them): the two
    # runs differ only in the checks.
    open) run "http://127.0.0.1:$GW_PORT/open" "$WORK/keys.lua" $SMALL_PID ;;
    big) run "http://127.0.0.1:$BIG_GW_PORT/checked" "$WORK/keys.lua" $BIG_PID ;;
  esac >> "${2:-$WORK/$1.txt}"
  # A Tessera server works on for up to a second after its load stops (the last
  # access-log batch). The next run starts once it has, or that work lands in the next
  # run: without this pause nginx's p99 was twice as high after a Tessera run as after
  # another nginx run, and each round's p99 ratio went by the order the round ran in.
  sleep "$GAP"
}
# Warm the caches and pools, then measure. Each Tessera server is warmed for WARM seconds:
# a new database's SQLite WAL grows to its checkpoint size (10,000 pages, 40 MB) over the
# first 25 s or so of load, and until then each batch's commit extends the file, which
# the kernel zero-fills page by page on the writer's thread (a quarter of its time,
# perf); once at full size the WAL is reused and that cost is gone for as long as the
# server runs. Measured after it, the runs see the server as it serves for good.
one tessera /dev/null; one big /dev/null
taskset -c 1 wrk -t1 -c$CONNS -d"${WARM}s" -s "$WORK/keys.lua" "http://127.0.0.1:$GW_PORT/checked" >/dev/null
taskset -c 1 wrk -t1 -c$CONNS -d"${WARM}s" -s "$WORK/keys.lua" "http://127.0.0.1:$BIG_GW_PORT/checked" >/dev/null
sleep "$GAP"
for round in $(seq "$ROUNDS"); do
  # Every other round runs in reverse order. The runs a ratio compares stay next to each
  # other, but each goes first in half the rounds, so that what a run leaves behind for
  # the next (cold caches after another server, sockets closing) favours neither side.
  if (( round % 2 )); then order=(raw nginxmin nginx tessera open big); else order=(big open tessera nginx nginxmin raw); fi
  for r in "${order[@]}"; do one "$r"; done
done
# The median of each column of a file of run lines.
median() { for col in $(seq "$(awk '{ print NF; exit }' "$1")"); do awk -v c=$col '{ print $c }' "$1" | sort -g | sed -n "$(( ($(wc -l < "$1") + 1) / 2 ))p"; done | xargs; }

# Memory per cached token: RSS growth while 100,000 more tokens get cached, divided by
# the tokens the verifier read from the database meanwhile (its miss counter). A first
# 10 s run over 100,000 other tokens warms what grows with any new tokens and is not
# the cache: SQLite's page cache (the counters' rows, the access log's pages), the
# access log's buffers, the allocator's arenas. Without it the figure moves with what
# ran before.
rss() { awk '/VmRSS/ { print $2 }' /proc/"$BIG_PID"/status; }
misses() { curl -sf "http://127.0.0.1:$BIG_ADMIN_PORT/metrics" | awk '/^tessera_token_cache_lookups_total\{result="miss"\}/ { print $2 }'; }
head -n 100000 "$WORK/keys200k.txt" > "$WORK/keys100k.txt"
tail -n +100001 "$WORK/keys200k.txt" > "$WORK/warm100k.txt"
lua keys100k "$WORK/keys100k.txt"; lua warm100k "$WORK/warm100k.txt"
taskset -c 1 wrk -t1 -c$CONNS -d10s -s "$WORK/warm100k.lua" "http://127.0.0.1:$BIG_GW_PORT/checked" >/dev/null
sleep 2 # the warm-up's last access-log batch is written
BEFORE=$(rss); MISSES_BEFORE=$(misses)
taskset -c 1 wrk -t1 -c$CONNS -d10s -s "$WORK/keys100k.lua" "http://127.0.0.1:$BIG_GW_PORT/checked" >/dev/null
sleep 2
AFTER=$(rss); MISSES_AFTER=$(misses)
[ -n "$MISSES_BEFORE" ] && [ -n "$MISSES_AFTER" ] && [ "$MISSES_AFTER" -gt "$MISSES_BEFORE" ] \
  || { echo "no token-cache misses counted on :$BIG_ADMIN_PORT/metrics ($MISSES_BEFORE -> $MISSES_AFTER)" >&2; exit 1; }
CACHED=$(( MISSES_AFTER - MISSES_BEFORE ))

# Each ratio is the median over rounds of that round's ratio: the two runs it compares
# ran seconds apart, so a drift of the VM's speed across the run cancels out.
# The rounds' own ratios, in round order: how far one run of this script can be trusted.
rounds() { # $1, $2 = files of run lines, $3 = column (1 req/s, 3 p99, 6 server CPU)
  paste -d' ' "$1" "$2" | awk -v c="$3" '{ printf "%s%.2f", (NR > 1 ? " " : ""), $c / $(c + NF / 2) }'
}
ratio() { # as rounds; their median (rounding keeps the order, so it is the same round's)
  rounds "$@" | tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { printf "%s", v[int((NR + 1) / 2)] }'
}
row() { printf '%-44s %10s %9s %9s %8s %8s %8s\n' "$@"; }
printf '\n'; row "median of $ROUNDS (${CONNS} conns, ${DURATION}s, wrk core 1)" "req/s" "p50 ms" "p99 ms" "idle 0%" "idle 1%" "cpu µs"
while read -r r label; do
  # shellcheck disable=SC2046 # the median's columns, one argument each
  row "$label" $(median "$WORK/$r.txt")
done <<ROWS
raw raw upstream (${UPSTREAM:-lean}, core 1)
nginx nginx proxy + map, the gateway's headers
nginxmin nginx proxy + map, no added headers
tessera tessera gateway, 1,000 tokens (core 0)
open tessera gateway, auth: none (core 0)
big tessera gateway, 1,000,000 tokens in db
ROWS
echo
echo "throughput  tessera / nginx:               $(ratio "$WORK/tessera.txt" "$WORK/nginx.txt" 1)   (goal >= 1.0)"
echo "p99         tessera / nginx:               $(ratio "$WORK/tessera.txt" "$WORK/nginx.txt" 3)   (goal <= 1.2)"
echo "throughput  checks / auth none:            $(ratio "$WORK/tessera.txt" "$WORK/open.txt" 1)   (goal >= 0.9)"
echo "throughput  1,000,000 / 1,000 tokens:      $(ratio "$WORK/big.txt" "$WORK/tessera.txt" 1)   (goal >= 0.9)"
echo "reference   server CPU a request, nginx / tessera: $(ratio "$WORK/nginx.txt" "$WORK/tessera.txt" 6); auth none / checks: $(ratio "$WORK/open.txt" "$WORK/tessera.txt" 6)"
echo "reference   tessera / nginx, no added headers: $(ratio "$WORK/tessera.txt" "$WORK/nginxmin.txt" 1)   (p99 $(ratio "$WORK/tessera.txt" "$WORK/nginxmin.txt" 3))"
echo
echo "each round's ratios, in order:"
echo "  tessera / nginx:      $(rounds "$WORK/tessera.txt" "$WORK/nginx.txt" 1)"
echo "  p99 tessera / nginx:  $(rounds "$WORK/tessera.txt" "$WORK/nginx.txt" 3)"
echo "  checks / auth none:   $(rounds "$WORK/tessera.txt" "$WORK/open.txt" 1)"
echo "  1,000,000 / 1,000:    $(rounds "$WORK/big.txt" "$WORK/tessera.txt" 1)"
echo "  tessera / nginx, no added headers: $(rounds "$WORK/tessera.txt" "$WORK/nginxmin.txt" 1)"
echo "  CPU a request, auth none / checks: $(rounds "$WORK/open.txt" "$WORK/tessera.txt" 6)"
echo
echo "memory per cached token:                   $(( (AFTER - BEFORE) * 1024 / CACHED )) bytes (RSS $BEFORE -> $AFTER KiB over $CACHED tokens read and cached)"
