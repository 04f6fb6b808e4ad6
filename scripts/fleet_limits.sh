#!/usr/bin/env bash
# The fleet's limits on one machine, as the README quotes them: 4 streams of a clip in one process
# (`rtvision --sources`) against `rtvision fleet` with 2 actors on a local Ray instance, alternated,
# REPEAT times each; writes OUT.md and OUT.json (default assets/fleet-cpu-DATE).
# Usage: scripts/fleet_limits.sh [CLIP] [REPEAT] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIP=$(realpath "${1:-../shared/data/faces_1080p.mp4}")
REPEAT=${2:-2}
OUT=${3:-assets/fleet-cpu-$(date -u +%F)}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for i in 0 1 2 3; do echo "s$i=$CLIP" >> "$TMP/cams.txt"; done
COMMON=(--sources "$TMP/cams.txt" --classifier mobilenet_v2)
for r in $(seq 1 "$REPEAT"); do
  python -m rtvision "${COMMON[@]}" --headless --no-progress --summary-json "$TMP/one-$r.json" > /dev/null 2> "$TMP/one-$r.err" || true
  python -m rtvision fleet "${COMMON[@]}" --ray auto --actors 2 --summary-json "$TMP/fleet-$r.json" > /dev/null 2> "$TMP/fleet-$r.err" || true
done
python - "$TMP" "$REPEAT" "$OUT" "$CLIP" <<'PY'
import json, sys, pathlib, platform, datetime
tmp, repeat, out, clip = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, ".")
from rtvision.benchmark.fingerprint import fingerprint_line
from rtvision.benchmark.fingerprint import machine_fingerprint
rows = {"one": [], "fleet": []}
for r in range(1, repeat + 1):
    for arm in rows:
        p = tmp / f"{arm}-{r}.json"
        if not p.is_file():
            raise SystemExit(f"{arm} run {r} wrote no summary: {(tmp / f'{arm}-{r}.err').read_text()[-500:]}")
        s = json.loads(p.read_text())
        rss = s.get("peak_rss_mb") if arm == "one" else sum(a.get("peak_rss_mb") or 0 for a in s["actors"])
        wall = s.get("process_age_s") if arm == "one" else s.get("wall_s")
        rows[arm].append({"run": r, "exit_code": s["exit_code"], "frames": s["frames_processed"], "wall_s": wall,
                          "first_result_s": s.get("first_result_s"), "peak_rss_mb": rss,
                          "ray_init_s": s.get("ray_init_s"), "restarts": s.get("restarts")})
m = machine_fingerprint()
report = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "clip": clip,
          "streams": 4, "actors": 2, "runs": rows, "machine": m}
pathlib.Path(out + ".json").write_text(json.dumps(report, indent=1))
f = lambda v, nd=1: "n/a" if v is None else f"{v:.{nd}f}"
lines = [f"# rtvision fleet on one machine: 4 streams, one process against 2 Ray actors ({report['created']})", "",
         f"- machine: {fingerprint_line(m)}", f"- clip: `{clip}` x 4 streams (files), `--classifier mobilenet_v2`, default faces",
         "- one process: `rtvision --sources cams.txt --headless`; fleet: `rtvision fleet --sources cams.txt --ray auto --actors 2`"
         " (a local Ray instance on 127.0.0.1); alternated, one after the other", "",
         "| arm | run | exit | frames | start to summary s | first result s | Ray up s | peak RSS MB (fleet: actors summed) |",
         "|---|---|---|---|---|---|---|---|"]
for arm, rs in rows.items():
    for x in rs:
        lines.append(f"| {arm} | {x['run']} | {x['exit_code']} | {x['frames']} | {f(x['wall_s'])} | {f(x['first_result_s'])} | "
                     f"{f(x['ray_init_s'])} | {f(x['peak_rss_mb'], 0)} |")
pathlib.Path(out + ".md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
