"""Summarises benches/compare.sh: each job's median and spread, and the ratios issue 18 sets
goals for. Arguments: results file (lines "job wall cpu rss_mib broker_cpu steal"), records, bytes of
keys and values, the compressed and the uncompressed archive's sizes."""
import statistics
import sys
from collections import defaultdict

path, records, data, zsize, nsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = defaultdict(list)
for line in open(path):
    job, wall, cpu, rss, broker, steal = line.split()
    num = lambda v: float("nan") if v == "-" else float(v)
    runs[job].append((num(wall), num(cpu), num(rss), num(broker), num(steal)))

med = {job: tuple(statistics.median(r[i] for r in rs) for i in range(5)) for job, rs in runs.items()}
gb = data / 1e9
print(f"\n{records} records, {data / 1e6:.0f} MB of keys and values; archive {zsize / 1e6:.0f} MB "
      f"with zstd 3 ({data / zsize:.2f}x smaller), {nsize / 1e6:.0f} MB without compression")
print(f"medians of {max(len(r) for r in runs.values())} rounds (spread: min-max)\n")
print("| job | wall s | CPU s (user+sys) | CPU s / GB | peak RSS MiB | broker CPU s | stolen s |")
print("|---|---|---|---|---|---|---|")
for job, rs in runs.items():
    w, c, m, b, st = med[job]
    walls = [r[0] for r in rs]
    f = lambda v, p: "-" if v != v else f"{v:.{p}f}"
    print(f"| {job} | {w:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {f(c, 2)} | {f(c / gb, 2)} | {f(m, 0)} | {f(b, 2)} | {f(st, 2)} |")


def ratio(name, value, goal, better):
    ok = value <= goal if better == "<=" else value >= goal
    print(f"- {name}: {value:.2f} (goal {better} {goal}: {'met' if ok else 'NOT met'})")


print()
if {"kar-backup", "zstd", "kcat-drain"} <= med.keys():
    floor = med["zstd"][1] + med["kcat-drain"][1]
    ratio("backup CPU / (zstd -3 -T1 + kcat drain) CPU", med["kar-backup"][1] / floor, 1.10, "<=")
    wall_floor = max(med["kcat-drain"][0], med["zstd"][1] / 2)
    ratio("max(kcat drain wall, zstd CPU / 2 cores) / backup wall", wall_floor / med["kar-backup"][0], 0.9, ">=")
    # The two cores are shared: the least wall they allow is the work's CPU over two, the
    # broker's serving it included (kcat's drain asks it for the same records).
    shared = (floor + med["kcat-drain"][3]) / 2
    print(f"- (zstd + kcat drain + the broker serving the drain) CPU / 2 cores: {shared:.2f} s, "
          f"/ backup wall: {shared / med['kar-backup'][0]:.2f}; the wall goal asks for a backup "
          f"wall of at most {wall_floor / 0.9:.2f} s")
if {"kar-backup-none", "kcat-file"} <= med.keys():
    ratio("kcat to a file wall / backup --compression none wall", med["kcat-file"][0] / med["kar-backup-none"][0], 1.0, ">=")
if {"consumer-perf", "kar-backup"} <= med.keys():
    print(f"- ConsumerPerformance wall / backup wall: {med['consumer-perf'][0] / med['kar-backup'][0]:.2f}")
producers = [j for j in ("kcat-produce", "producer-perf-send") if j in med]
for job in ("kar-restore", "kar-restore-quick"):
    if producers and job in med:
        fastest = min(med[j][0] for j in producers)
        ratio(f"fastest of kcat -P / ProducerPerformance (send) wall / {job} wall", fastest / med[job][0], 1.0, ">=")
for job in ("kar-backup", "kar-backup-none", "kar-restore", "kar-restore-quick"):
    if job in med:
        ratio(f"{job} peak RSS MiB", med[job][2], 256, "<=")
