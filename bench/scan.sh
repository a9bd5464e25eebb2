#!/usr/bin/env bash
# `tessera scan` throughput on a generated tree of text (default 100 MB in 2,000 files,
# with look-alike values and a few real ones), with ripgrep searching the same tree for
# the same shape (`tsr_` + 49 letters and digits, no checksum) as the anchor. Files are
# read once before timing, so both read from the page cache. Each round times both;
# the table reports the best round of each (MB/s) and their ratio.
#   bash bench/scan.sh [MB=100] [ROUNDS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-100}; ROUNDS=${2:-5}
command -v rg >/dev/null || { sudo -n true 2>/dev/null && S=sudo || S=; $S apt-get install -y -qq ripgrep >/dev/null; }
cargo build --release --quiet --bin tessera
BIN=target/release/tessera
W=$(mktemp -d /tmp/tessera-scan.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 - "$W/tree" "$MB" <<'PY'
import os, random, string, sys, zlib
root, mb = sys.argv[1], int(sys.argv[2])
alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase
def b62(n, width):
    out = ""
    while n: n, r = divmod(n, 62); out = alphabet[r] + out
    return out.rjust(width, "0")
def value(rng):
    head = "tsr_" + b62(int.from_bytes(rng.randbytes(32), "big"), 43)
    return head + b62(zlib.crc32(head.encode()), 6)
rng = random.Random(1)
words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 10))) for _ in range(5000)]
files, size = 2000, mb * 1_000_000 // 2000
for i in range(files):
    d = os.path.join(root, f"d{i % 40:02}")
    os.makedirs(d, exist_ok=True)
    lines, n = [], 0
    while n < size:
        r = rng.random()
        if r < 0.002: line = "api_key = " + value(rng)[:-1] + "x"        # look-alike
        elif r < 0.0021 and i % 100 == 0: line = "TOKEN=" + value(rng)   # real
        else: line = " ".join(rng.choice(words) for _ in range(12))
        lines.append(line); n += len(line) + 1
    with open(os.path.join(d, f"f{i}.txt"), "w") as f: f.write("\n".join(lines) + "\n")
PY
BYTES=$(du -sb "$W/tree" | cut -f1)
cat "$W"/tree/*/* >/dev/null
best() { sort -n | head -1; }
time_of() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
TS=(); RG=()
for r in $(seq "$ROUNDS"); do
  TS+=("$(time_of $BIN scan "$W/tree")")
  RG+=("$(time_of rg -c --no-ignore 'tsr_[0-9A-Za-z]{49}' "$W/tree")")
done
FOUND=$($BIN scan "$W/tree" 2>/dev/null | wc -l || true)
T=$(printf '%s\n' "${TS[@]}" | best); R=$(printf '%s\n' "${RG[@]}" | best)
echo
echo "tree: $((BYTES / 1000000)) MB in 2000 files; findings: $FOUND; rounds: $ROUNDS; $(nproc) cores"
printf '| | best s | MB/s |\n|---|---|---|\n'
printf '| tessera scan | %.3f | %.0f |\n' "$T" "$(echo "$BYTES / 1000000 / $T" | bc -l)"
printf '| rg (same shape, no checksum) | %.3f | %.0f |\n' "$R" "$(echo "$BYTES / 1000000 / $R" | bc -l)"
printf '| tessera ÷ rg | %.2f | |\n' "$(echo "$R / $T" | bc -l)"
