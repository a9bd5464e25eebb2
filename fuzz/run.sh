#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS each, 60 by default) from the
# committed corpus; any crash fails the run and leaves its input in fuzz/artifacts/.
# New inputs go to a temporary folder, not into fuzz/corpus/: the committed corpus changes
# only on purpose (`cargo fuzz run TARGET`, then `cargo fuzz cmin TARGET`).
# cargo-fuzz's default AddressSanitizer needs a nightly compiler; the code under test is
# safe Rust, so the targets run uninstrumented for memory (`-s none`) on stable, still
# coverage-guided.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
seconds=${FUZZ_SECONDS:-60}
cargo fuzz build -s none -O
log=$(mktemp)
for target in $(cargo fuzz list); do
  echo "== fuzz $target (${seconds} s)"
  found=$(mktemp -d)
  if ! cargo fuzz run -s none -O "$target" "$found" "corpus/$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E '^Done' "$log"
  rm -rf "$found"
done
rm -f "$log"
