#!/usr/bin/env bash
# Continuous mode's lag behind the log end under a steady producer: `kar backup --continuous
# --roll-every $ROLL` on a topic that begins empty, while bench_tool produces 1 KiB records at
# $RATE a second over 6 partitions for $SECONDS_RUN seconds. Sampled every 250 ms: how many
# records the log holds that kar has not read yet (read lag, from kar's own /metrics), and that
# are not yet in a complete member (durable lag: what a crash at that moment would leave to the
# next run to read again). Prints the median and the maximum of each, in records and in seconds
# of production. Release builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE=${RATE:-20000}
SECONDS_RUN=${SECONDS_RUN:-60}
ROLL=${ROLL:-10s}
BOOTSTRAP=127.0.0.1:${KAR_KAFKA_PORT:-9092}
METRICS=127.0.0.1:${METRICS_PORT:-9469}
OUT_DIR=${BENCH_OUT_DIR:-.kar/bench}
run=$(date +%s)
TOPIC=kar-bench-continuous-$run
DIR="$OUT_DIR/continuous-$run"
mkdir -p "$DIR"

scripts/build-deps
scripts/services up >/dev/null
cargo build --release --quiet --bin kar --example bench_tool
KAR=target/release/kar
TOOL=target/release/examples/bench_tool

"$TOOL" seed "$BOOTSTRAP" "$TOPIC" 6 0 >/dev/null
"$KAR" --metrics-addr "$METRICS" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" \
  --continuous --out-dir "$DIR" --roll-every "$ROLL" --json >"$DIR/report.json" &
kar=$!
sleep 2
"$TOOL" steady "$BOOTSTRAP" "$TOPIC" 6 "$RATE" "$SECONDS_RUN" &
producer=$!
read -r _ rm rx _ dm dx < <("$TOOL" lag "$BOOTSTRAP" "$TOPIC" 6 "$METRICS" "$DIR" "$SECONDS_RUN")
wait "$producer"
kill -TERM "$kar"
wait "$kar"
"$KAR" chain "$DIR" >/dev/null || { echo "the chain is not whole" >&2; exit 1; }
members=$(ls "$DIR"/*.kar | wc -l)
awk -v r="$RATE" -v rm="$rm" -v rx="$rx" -v dm="$dm" -v dx="$dx" -v roll="$ROLL" -v n="$members" 'BEGIN {
  printf "steady producer %d records/s (1 KiB) over 6 partitions; --roll-every %s; %d members\n", r, roll, n
  printf "read lag     median %d records (%.3f s), max %d (%.3f s)\n", rm, rm / r, rx, rx / r
  printf "durable lag  median %d records (%.2f s), max %d (%.2f s)\n", dm, dm / r, dx, dx / r
}'
rm -rf "$DIR"
"$TOOL" delete "$BOOTSTRAP" "$TOPIC" >/dev/null
