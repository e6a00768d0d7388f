#!/usr/bin/env bash
# The one-pass stream reader against baselines measured in the same run, on the same data:
#
# 1. `kar verify -` reading the archive from a pipe, against `b3sum --num-threads 1` (BLAKE3's
#    own tool, hashing the records' bytes once) and `zstd -d` (decompressing the same bytes,
#    compressed at kar's level, 3), both as processes, and against `kar verify FILE` (the file
#    verify, which maps the file). Throughput is in content bytes (the uncompressed chunks: the
#    `--compression none` archive's size) per second, for all four. The stream verify does both
#    baselines' work and more (the stored bytes hashed, decompressed, the content hashed, every
#    record decoded), in one thread; the goal is at least 0.85x the slower baseline and 0.95x the
#    file verify.
# 2. The peak memory (max RSS) of `kar verify -` over the archive.
# 3. `kar backup --out - | kar restore -` end to end, against `kar backup --out FILE` then
#    `kar restore FILE`, into new topics.
#
# Seeds (once) about $BENCH_MB MiB of 1 KiB JSON records over 6 partitions. Medians of $ROUNDS.
# Release builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH_MB=${BENCH_MB:-1024}
ROUNDS=${ROUNDS:-3}
E2E_ROUNDS=${E2E_ROUNDS:-2}
BOOTSTRAP=127.0.0.1:${KAR_KAFKA_PORT:-9092}
TOPIC=kar-bench-stream-${BENCH_MB}m
OUT_DIR=${BENCH_OUT_DIR:-.kar/bench}
ARCHIVE=$OUT_DIR/stream-${BENCH_MB}m.kar
PLAIN=$OUT_DIR/stream-${BENCH_MB}m-none.kar
ZST=$PLAIN.zst
mkdir -p "$OUT_DIR"

scripts/build-deps
scripts/services up >/dev/null
cargo build --release --quiet --bin kar --example bench_tool
KAR=target/release/kar
TOOL=target/release/examples/bench_tool
command -v zstd >/dev/null || { echo "stream.sh: zstd (the command) is needed" >&2; exit 1; }
B3SUM=$(command -v b3sum || true)
if [[ -z $B3SUM ]]; then
  B3SUM=.kar/tools/bin/b3sum
  [[ -x $B3SUM ]] || cargo install --quiet --locked b3sum --root .kar/tools
fi

"$TOOL" seed "$BOOTSTRAP" "$TOPIC" 6 "$BENCH_MB"
[[ -f $ARCHIVE ]] || "$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" --out "$ARCHIVE" --json >/dev/null
[[ -f $PLAIN ]] || "$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" --compression none --out "$PLAIN" --json >/dev/null
[[ -f $ZST ]] || zstd -3 -q -f "$PLAIN" -o "$ZST"
content=$(stat -c %s "$PLAIN")

# Seconds a command takes; a failing command stops the bench.
elapsed() {
  local s e; s=$(date +%s.%N)
  bash -c "$1" >/dev/null || { echo "failed: $1" >&2; exit 1; }
  e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN {printf "%.3f", b - a}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

stream=(); redirect=(); file=(); b3=(); zd=()
for r in $(seq 1 "$ROUNDS"); do
  stream+=("$(elapsed "cat '$ARCHIVE' | '$KAR' verify - --json")")
  redirect+=("$(elapsed "'$KAR' verify - --json < '$ARCHIVE'")")
  file+=("$(elapsed "'$KAR' verify '$ARCHIVE' --json")")
  b3+=("$(elapsed "'$B3SUM' --num-threads 1 '$PLAIN'")")
  zd+=("$(elapsed "zstd -d -q -c '$ZST'")")
  echo "round $r: stream verify ${stream[-1]}s (from a pipe), ${redirect[-1]}s (stdin a file), file verify ${file[-1]}s, b3sum ${b3[-1]}s, zstd -d ${zd[-1]}s"
done
s=$(median "${stream[@]}"); d=$(median "${redirect[@]}"); f=$(median "${file[@]}"); b=$(median "${b3[@]}"); z=$(median "${zd[@]}")
awk -v n="$content" -v s="$s" -v d="$d" -v f="$f" -v b="$b" -v z="$z" -v a="$(stat -c %s "$ARCHIVE")" 'BEGIN {
  m = 1048576
  printf "\ncontent %.0f MiB, archive %.0f MiB\n", n / m, a / m
  printf "stream verify %.0f MiB/s from a pipe (cat |), %.0f MiB/s with stdin a file, file verify %.0f MiB/s, b3sum --num-threads 1 %.0f MiB/s, zstd -d %.0f MiB/s\n", n / s / m, n / d / m, n / f / m, n / b / m, n / z / m
  slower = (b > z) ? b : z
  printf "stream / slower baseline %.2fx (goal >= 0.85), stream / file verify %.2fx from a pipe, %.2fx with stdin a file (goal >= 0.95)\n", slower / s, f / s, f / d
}'

# Peak memory of the stream reader.
python3 - "$KAR" "$ARCHIVE" <<'EOF'
import resource, subprocess, sys
kar, archive = sys.argv[1], sys.argv[2]
with open(archive, "rb") as f:
    subprocess.run([kar, "verify", "-", "--json"], stdin=f, stdout=subprocess.DEVNULL, check=True)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"peak memory of kar verify - over the archive: {rss / 1024:.0f} MiB (max RSS)")
EOF

# End to end: through a pipe, against a file between.
pipe=(); two=()
run=$(date +%s)
for r in $(seq 1 "$E2E_ROUNDS"); do
  st=$(mktemp -d)
  pipe+=("$(elapsed "'$KAR' backup --bootstrap $BOOTSTRAP --topics $TOPIC --out - | '$KAR' restore - --bootstrap $BOOTSTRAP --map $TOPIC=kar-bench-pipe-$run-$r --state $st/pipe --json")")
  f2="$OUT_DIR/e2e-$run-$r.kar"
  two+=("$(elapsed "'$KAR' backup --bootstrap $BOOTSTRAP --topics $TOPIC --out '$f2' --json && '$KAR' restore '$f2' --bootstrap $BOOTSTRAP --map $TOPIC=kar-bench-file-$run-$r --state $st/file --json")")
  rm -rf "$st" "$f2"
  "$TOOL" delete "$BOOTSTRAP" "kar-bench-pipe-$run-$r" >/dev/null
  "$TOOL" delete "$BOOTSTRAP" "kar-bench-file-$run-$r" >/dev/null
  echo "round $r: backup | restore - ${pipe[-1]}s, backup to a file then restore it ${two[-1]}s"
done
p=$(median "${pipe[@]}"); t=$(median "${two[@]}")
awk -v p="$p" -v t="$t" -v n="$content" 'BEGIN {
  printf "\nend to end (median): through a pipe %.2fs, through a file %.2fs: %.2fx the time (%.0f MiB of content)\n", p, t, p / t, n / 1048576
}'
