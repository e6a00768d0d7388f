#!/usr/bin/env bash
# How many requests a registry snapshot takes, and so how long at a rate limit.
#
# Registers (once) $SUBJECTS subjects of $VERSIONS versions each (Avro records that each add an
# optional field, so every version is compatible) in the source registry under a prefix of their
# own, then backs up only those subjects (and an empty topic of their own) at --registry-rate-limit $RATE and prints the
# requests kar reports, the seconds taken and what the requests cost at the default 25 a second.
# The time at $RATE checks the count: the token bucket has no burst, so the time is at least
# requests / RATE.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUBJECTS=${SUBJECTS:-500}
VERSIONS=${VERSIONS:-3}
RATE=${RATE:-200}
SOURCE=http://127.0.0.1:${KAR_REGISTRY_SOURCE_PORT:-8081}
BOOTSTRAP=127.0.0.1:${KAR_KAFKA_PORT:-9092}
PREFIX=kar-reg-bench-$SUBJECTS-$VERSIONS
OUT=${BENCH_OUT_DIR:-.kar/bench}
mkdir -p "$OUT"

scripts/build-deps
scripts/services up >/dev/null
cargo build --release --quiet --bin kar --example bench_tool
KAR=target/release/kar
# kar backs up topics and the registry together: an empty topic of its own.
target/release/examples/bench_tool create "$BOOTSTRAP" "$PREFIX" 1

python3 - "$SOURCE" "$PREFIX" "$SUBJECTS" "$VERSIONS" <<'PY'
import http.client, json, sys, urllib.parse
url, prefix, subjects, versions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port)
def call(method, path, body=None):
    c.request(method, path, body=json.dumps(body) if body else None,
              headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    r = c.getresponse()
    data = r.read()
    return r.status, data
status, data = call("GET", f"/subjects/{prefix}-{subjects - 1}-value/versions")
if status == 200 and len(json.loads(data)) == versions:
    print(f"{subjects} subjects of {versions} versions are registered already")
    sys.exit(0)
for s in range(subjects):
    for v in range(versions):
        fields = [{"name": "id", "type": "string"}] + [
            {"name": f"f{k}", "type": ["null", "string"], "default": None} for k in range(v)]
        schema = {"type": "record", "name": f"R{s}", "namespace": "kar.bench", "fields": fields}
        status, data = call("POST", f"/subjects/{prefix}-{s}-value/versions", {"schema": json.dumps(schema)})
        if status != 200:
            sys.exit(f"registering {prefix}-{s}-value v{v + 1}: {status} {data!r}")
print(f"registered {subjects} subjects of {versions} versions")
PY

start=$(date +%s.%N)
rm -f "$OUT/registry.kar"
"$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$PREFIX" --registry "$SOURCE" \
  --subjects "$PREFIX-.*" --registry-rate-limit "$RATE" --out "$OUT/registry.kar" --json >"$OUT/registry.json"
end=$(date +%s.%N)
python3 - "$OUT/registry.json" "$start" "$end" "$RATE" "$SUBJECTS" "$VERSIONS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["registry"]
secs, rate, subjects, versions = float(sys.argv[3]) - float(sys.argv[2]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
req = r["requests"]
print(f"{r['subjects']} subjects, {r['versions']} versions: {req} requests ({req / subjects:.2f} a subject), "
      f"{secs:.1f} s at {rate:.0f}/s (at least {req / rate:.1f} s); at the default 25/s: {req / 25:.0f} s")
PY
