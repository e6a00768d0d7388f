#!/usr/bin/env bash
# Backup throughput against a bare rdkafka consumer on the same topic, in one run.
#
# Seeds (once) a topic of about $BENCH_MB MiB of 1 KiB records over 6 partitions on the local
# broker, then times, alternately and $ROUNDS times each: (a) a bare rdkafka consumer that drains
# every partition and drops the records (same consumer settings as kar), (b) `kar backup` of the
# same topic. Prints the median of each and the ratio. Release builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH_MB=${BENCH_MB:-1024}
ROUNDS=${ROUNDS:-3}
BOOTSTRAP=127.0.0.1:${KAR_KAFKA_PORT:-9092}
TOPIC=kar-bench-${BENCH_MB}m
OUT_DIR=${BENCH_OUT_DIR:-.kar/bench}
mkdir -p "$OUT_DIR"

scripts/build-deps
scripts/services up >/dev/null
cargo build --release --quiet --bin kar --example bench_tool
KAR=target/release/kar
TOOL=target/release/examples/bench_tool

"$TOOL" seed "$BOOTSTRAP" "$TOPIC" 6 "$BENCH_MB"

bare=() ; kar=()
for r in $(seq 1 "$ROUNDS"); do
  read -r records bytes secs < <("$TOOL" drain "$BOOTSTRAP" "$TOPIC")
  bare+=("$secs")
  rm -f "$OUT_DIR/bench.kar"
  start=$(date +%s.%N)
  "$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" --out "$OUT_DIR/bench.kar" --json >"$OUT_DIR/report.json"
  end=$(date +%s.%N)
  kar+=("$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')")
  echo "round $r: bare consumer ${secs}s, kar backup ${kar[-1]}s ($records records, $bytes bytes)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
b=$(median "${bare[@]}"); k=$(median "${kar[@]}")
archive=$(stat -c %s "$OUT_DIR/bench.kar")
awk -v r="$ROUNDS" -v b="$b" -v k="$k" -v bytes="$bytes" -v archive="$archive" 'BEGIN {
  mb = bytes / 1e6
  printf "\nmedian of %d: bare consumer %.2fs (%.0f MB/s), kar backup %.2fs (%.0f MB/s)\n", r, b, mb / b, k, mb / k
  printf "kar / bare throughput ratio: %.2f   (archive %d bytes, %.2fx smaller than the records)\n", b / k, archive, bytes / archive
}'
