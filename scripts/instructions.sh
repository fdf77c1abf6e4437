#!/usr/bin/env bash
# Instructions per operation, Footlight beside raw Tokio, counted by
# callgrind: repeatable on a noisy machine, so a change's effect on the hot
# paths shows without timing noise. Each figure is the difference between
# two runs of N1 and N2 operations, divided by N2 - N1 (set-up cancels out).
#
#   scripts/instructions.sh            # ask and tell, 2,000 vs 12,000 operations
#   N1=1000 N2=5000 scripts/instructions.sh
#   EXTRA=--handler-times scripts/instructions.sh   # with every handler timed
#   OPS="ask ring" scripts/instructions.sh           # some of: ask tell ring spawn rtt
#
# A ring operation is one hop (100 actors in a ring); a spawn operation is
# one actor spawned, sent a message, stopped and waited for. An rtt
# operation is one remote ask over QUIC between two processes on 127.0.0.1
# (`benches/remote.rs`), beside one 16-byte echo over a bare QUIC stream;
# both processes are counted (`--trace-children`), from N1R and N2R round
# trips (200 and 1,200 unless set). Its count includes what each node does
# meanwhile for as long as the round trips take (membership probes, about
# one a second), which the difference of the two runs does not cancel: a
# small share, but not zero.
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
OPS=${OPS:-ask tell ring spawn}
cargo bench -q -p actor-core --bench runtime --no-run 2>/dev/null
bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/runtime-* | grep -v '\.d$' | head -1)
case " $OPS " in *" rtt "*)
  cargo bench -q --bench remote --no-run 2>/dev/null
  rbin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/remote-* | grep -v '\.d$' | head -1) ;;
esac
N1R=${N1R:-200}
N2R=${N2R:-1200}
count() { # what n -> total instructions (of every process)
  local out exe=$bin
  case "$1" in rtt*) exe=$rbin ;; esac
  out=$(valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=/dev/null "$exe" --ops "$1" "$2" ${EXTRA:-} 2>&1)
  echo "$out" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s }'
}
per_op() { # what -> instructions per operation
  local a b n1=$N1 n2=$N2
  case "$1" in rtt*) n1=$N1R; n2=$N2R ;; esac
  a=$(count "$1" "$n1")
  b=$(count "$1" "$n2")
  echo $(( (b - a) / (n2 - n1) ))
}
# The baseline is raw Tokio (a task and a channel per actor), and for rtt a
# bare QUIC stream.
printf '%-8s %14s %14s %8s\n' "op" "footlight" "baseline" "ratio"
for op in $OPS; do
  ours=$(per_op "$op")
  raw=$(per_op "$op-raw")
  printf '%-8s %10s ins %10s ins %7.2fx\n' "$op" "$ours" "$raw" "$(echo "$ours / $raw" | bc -l)"
done
