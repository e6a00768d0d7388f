#!/usr/bin/env bash
# Backup throughput against a bare rdkafka consumer on the same topic, in one run.
#
# Seeds (once) a topic of about $BENCH_MB MiB of 1 KiB records over 6 partitions on the local
# broker, then times, alternately and $ROUNDS times each, as whole processes from the outside:
#   (a) a bare rdkafka consumer that drains every partition and drops the records (same consumer
#       settings as kar),
#   (b) `kar backup` of the same topic with its defaults (zstd level 3),
#   (c) `kar backup --compression none`.
# Prints the median of each, the ratios of throughput, and the archive sizes. Release builds.
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

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
bare=() ; zstd=() ; none=()
for r in $(seq 1 "$ROUNDS"); do
  start=$(now)
  read -r records bytes _ < <("$TOOL" drain "$BOOTSTRAP" "$TOPIC")
  bare+=("$(since "$start")")
  for mode in zstd none; do
    rm -f "$OUT_DIR/bench-$mode.kar"
    start=$(now)
    "$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" --out "$OUT_DIR/bench-$mode.kar" \
      --compression "$mode" --json >"$OUT_DIR/report-$mode.json"
    if [ "$mode" = zstd ]; then zstd+=("$(since "$start")"); else none+=("$(since "$start")"); fi
  done
  echo "round $r: bare consumer ${bare[-1]}s, kar backup ${zstd[-1]}s, kar backup --compression none ${none[-1]}s ($records records, $bytes bytes)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
b=$(median "${bare[@]}"); z=$(median "${zstd[@]}"); n=$(median "${none[@]}")
az=$(stat -c %s "$OUT_DIR/bench-zstd.kar"); an=$(stat -c %s "$OUT_DIR/bench-none.kar")
awk -v r="$ROUNDS" -v b="$b" -v z="$z" -v n="$n" -v bytes="$bytes" -v az="$az" -v an="$an" 'BEGIN {
  mb = bytes / 1e6
  printf "\nmedian of %d rounds, whole processes:\n", r
  printf "  bare consumer                   %6.2fs %5.0f MB/s\n", b, mb / b
  printf "  kar backup (zstd 3, default)    %6.2fs %5.0f MB/s  ratio %.2f  archive %d bytes (%.2fx smaller than the records)\n", z, mb / z, b / z, az, bytes / az
  printf "  kar backup --compression none   %6.2fs %5.0f MB/s  ratio %.2f  archive %d bytes\n", n, mb / n, b / n, an
}'
