#!/usr/bin/env bash
# Checks the OpenAPI document and the server against each other: the document must
# validate (openapi-spec-validator), and a bounded Schemathesis run with every check
# must find no 5xx, no answer outside the document, and no valid request rejected.
# Starts its own `tessera serve` on temporary files. Needs python3 with pip.
# ST_EXAMPLES (default 25) bounds the examples per operation.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
examples=${ST_EXAMPLES:-25}
python3 -m pip install --quiet --disable-pip-version-check \
  "schemathesis==4.32.5" "openapi-spec-validator==0.7.2"

(cd "$root" && cargo build --quiet --bin tessera)
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
base="http://127.0.0.1:$port"
TESSERA_ADMIN_PASSWORD=correct-horse-battery-staple "$root/target/debug/tessera" serve \
  --admin-addr "127.0.0.1:$port" --gateway-addr "127.0.0.1:$((port + 1))" \
  --database-url "sqlite://$work/t.db" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null "$base/healthz" && break; sleep 0.1; done

curl -fs "$base/api/v1/openapi.json" -o "$work/openapi.json"
python3 -c "import json, sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('openapi.json: valid')" "$work/openapi.json"

# A token for a run. The runs before may have changed the token policy: it is put back
# first, with room for tokens (the runs create many).
token() {
  curl -fs -c "$work/cookies" -H 'Content-Type: application/json' \
    -d '{"username":"admin","password":"correct-horse-battery-staple"}' "$base/api/v1/login" >/dev/null
  curl -fs -o /dev/null -X PUT -b "$work/cookies" -H "Origin: $base" -H 'Content-Type: application/json' \
    -d '{"default_expiry_days":30,"max_expiry_days":365,"allow_never_expires":false,"max_tokens_per_account":10000}' \
    "$base/api/v1/settings/token-policy"
  curl -fs -b "$work/cookies" -H "Origin: $base" -H 'Content-Type: application/json' \
    -d "{\"name\":\"schemathesis-$1\"}" "$base/api/v1/tokens" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
run() { # $1 = token, then schemathesis options
  local t=$1; shift
  # A run that revoked its own token early (delete_all, regenerate_self) made its later
  # requests failed authentications, which throttle this address for up to a minute
  # (429 to credentials the server does not know yet): wait that out.
  for _ in $(seq 70); do
    curl -fs -o /dev/null -H "X-API-KEY: $t" "$base/api/v1/user/me" && break
    sleep 1
  done
  curl -fs -o /dev/null -H "X-API-KEY: $t" "$base/api/v1/user/me"
  schemathesis --config-file schemathesis.toml run "$base/api/v1/openapi.json" --url "$base" \
    -H "X-API-KEY: $t" -H "Authorization: Bearer $t" -H "Cookie: X-API-KEY=$t" \
    --checks all --phases examples,coverage,fuzzing -n "$examples" --seed 1 \
    --generation-deterministic "$@"
}
# Operations that may revoke the run's own credential (delete or regenerate its token,
# change the admin's account) go last, each pass with a fresh token.
harmful=(delete regenerate disable admin_delete admin_disable delete_account update_account delete_all regenerate_self)
echo "== schemathesis: every operation but those that may revoke the run's own token"
run "$(token main)" --exclude-operation-id-regex "^($(IFS='|'; echo "${harmful[*]}"))$"
echo "== schemathesis: those, one at a time, each with a token of its own"
for op in "${harmful[@]}"; do
  run "$(token "$op")" --include-operation-id "$op"
done
