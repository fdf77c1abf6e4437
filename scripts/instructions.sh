#!/usr/bin/env bash
# Instructions per operation, Footlight beside raw Tokio, counted by
# callgrind: repeatable on a noisy machine, so a change's effect on the hot
# paths shows without timing noise. Each figure is the difference between
# two runs of N1 and N2 operations, divided by N2 - N1 (set-up cancels out).
#
#   scripts/instructions.sh            # ask and tell, 2,000 vs 12,000 operations
#   N1=1000 N2=5000 scripts/instructions.sh
#   EXTRA=--handler-times scripts/instructions.sh   # with every handler timed
#   OPS="ask ring" scripts/instructions.sh           # some of: ask tell ring spawn
#
# A ring operation is one hop (100 actors in a ring); a spawn operation is
# one actor spawned, sent a message, stopped and waited for.
#
# Built as a user's build is: the workspace sets `--cfg tokio_unstable`
# (.cargo/config.toml, for the simulation's seeded `select!`), which
# changes Tokio's code; an empty RUSTFLAGS overrides it, in a target
# directory of its own. RUSTFLAGS=--cfg=tokio_unstable measures the
# workspace's build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 1; }
N1=${N1:-2000}
N2=${N2:-12000}
export RUSTFLAGS="${RUSTFLAGS-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/as-users}"
cargo bench -q -p actor-core --bench runtime --no-run 2>/dev/null
bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/runtime-* | grep -v '\.d$' | head -1)
count() { # what n -> total instructions
  local out
  out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --ops "$1" "$2" ${EXTRA:-} 2>&1)
  echo "$out" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | tail -1
}
per_op() { # what -> instructions per operation
  local a b
  a=$(count "$1" "$N1")
  b=$(count "$1" "$N2")
  echo $(( (b - a) / (N2 - N1) ))
}
printf '%-8s %14s %14s %8s\n' "op" "footlight" "raw tokio" "ratio"
for op in ${OPS:-ask tell ring spawn}; do
  ours=$(per_op "$op")
  raw=$(per_op "$op-raw")
  printf '%-8s %10s ins %10s ins %7.2fx\n' "$op" "$ours" "$raw" "$(echo "$ours / $raw" | bc -l)"
done
