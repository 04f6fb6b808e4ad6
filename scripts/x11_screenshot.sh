#!/usr/bin/env bash
# The README's window screenshot, taken as users see the window: rtvision from the command line on
# a real X server (Xvfb, Qt's xcb platform), a screenshot of the whole X display (xwd), then a real
# `q` key press (xdotool). Needs Debian's xvfb, x11-apps, imagemagick and xdotool (.ci/run installs them).
# The shot is cropped to the window. With several --source flags the window is the grid of tiles;
# ENLARGE=K (1-9: the K-th stream's tile) enlarges that tile first (the key K, as a click on it does).
#
#   scripts/x11_screenshot.sh OUT.png N [rtvision flags...]   # shoot once N results are written (all streams)
#   scripts/x11_screenshot.sh assets/window.png 40 --source ../shared/data/faces_1080p.mp4
#   scripts/x11_screenshot.sh assets/grid.png 60 --source street=../shared/data/faces_1080p.mp4 --source demo \
#     --source door=rtsp://127.0.0.1:9/cam --reconnect 0 --classifier mobilenet_v2
set -euo pipefail
out=${1:?usage: $0 OUT.png N [rtvision flags...]}
want=${2:?usage: $0 OUT.png N [rtvision flags...]}
shift 2
for tool in Xvfb xwd convert xdotool; do command -v "$tool" >/dev/null || { echo "$0: $tool is missing" >&2; exit 2; }; done
work=$(mktemp -d)
mkfifo "$work/display"
Xvfb -displayfd 4 -screen 0 1600x900x24 -nolisten tcp 4>"$work/display" >/dev/null 2>&1 & xvfb=$!
read -r n <"$work/display"
trap 'kill "$xvfb" 2>/dev/null || true; rm -rf "$work"' EXIT
export DISPLAY=":$n" XDG_RUNTIME_DIR="$work"
unset QT_QPA_PLATFORM
rtvision "$@" --results "$work/r.jsonl" & app=$!
win=""
for _ in $(seq 1 900); do
  win=$(xdotool search --onlyvisible --name '^rtvision' 2>/dev/null | head -1 || true)
  [ -n "$win" ] && break
  kill -0 "$app" 2>/dev/null || { echo "$0: rtvision exited before its window appeared" >&2; exit 1; }
  sleep 0.2
done
[ -n "$win" ] || { echo "$0: the window never appeared" >&2; kill "$app"; exit 1; }
until [ "$(wc -l <"$work/r.jsonl" 2>/dev/null || echo 0)" -ge "$want" ]; do
  kill -0 "$app" 2>/dev/null || { echo "$0: rtvision exited before $want results" >&2; exit 1; }
  sleep 0.2
done
eval "$(xdotool getwindowgeometry --shell "$win")"  # X, Y, WIDTH, HEIGHT
if [ -n "${ENLARGE:-}" ]; then  # the grid window: key ENLARGE (1-9) enlarges that tile, as a click on it does
  xdotool windowfocus --sync "$win" key "$ENLARGE"
fi
sleep 1.5  # the stats panel refreshes 4 times a second; the plot fills
xwd -root -silent | convert xwd:- -crop "${WIDTH}x${HEIGHT}+${X}+${Y}" +repage "$out"
xdotool windowfocus --sync "$win" key q
rc=0
wait "$app" || rc=$?
echo "wrote $out (rtvision exit code $rc)"
