#!/usr/bin/env bash
# Runs the GPU-machine checks from the device kit (scripts/device/pack.sh, unpack.sh A and B
# first): the machine (nvidia-smi, nproc), the node agent's accelerator decision
# (scripts/device/detect.ts), real agents on the WebGPU and CPU providers against each other
# (scripts/device/webgpu-node.ts), then bench/mesh-overhead.ts, bench/stream-capacity.ts
# (WebSocket and SSE sweeps) and bench/openai-surface.ts, each under its own time limit.
# Each step's output goes to $OUT/<step>.log; the benches' JSON (and the logs of any bench that
# failed) to $OUT/results.tar.gz; one line per step to $OUT/run.log. Eight files in all.
# .gl/*.deb, when carried (libvulkan1 and libglvnd's packages, which the WebGPU provider needs
# beside the driver and a stock image lacks), are unpacked into / first: the machine has no network.
# Usage: scripts/device/run.sh [--quick]   (--quick: the benches' smoke runs, for a local try)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
KIT=$ROOT/.devbin
[ -x "$KIT/bin/node" ] && [ -d "$KIT/node_modules/tsx" ] || { echo "run.sh: unpack the kit first (scripts/device/unpack.sh A, then B)" >&2; exit 1; }
[ -e node_modules ] || ln -s .devbin/node_modules node_modules
export PATH="$KIT/bin:$PATH"
if compgen -G ".gl/*.deb" >/dev/null && command -v dpkg >/dev/null; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
OUT=${OUT:-$KIT/out}
mkdir -p "$OUT"
QUICK=()
[ "${1:-}" = --quick ] && QUICK=(--quick)
# Everything below ends inside this many seconds (the device call's own limit is set above it).
BUDGET_S=${RUN_BUDGET_S:-420}
T0=$(date +%s)
marker=$(mktemp)
: >"$OUT/run.log"

# step NAME LIMIT_S COMMAND...: runs it under `timeout` (SIGTERM, which the bench harness turns
# into a clean stop of its mesh; SIGKILL 15 s later), capped by what is left of BUDGET_S.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - T0)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    echo "$name: skipped (run budget spent)" | tee -a "$OUT/run.log"
    return
  fi
  local start=$(date +%s)
  echo "=== $name (limit ${limit}s): $*"
  timeout -k 15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  local verdict=ok
  [ "$rc" -ne 0 ] && verdict="FAILED rc=$rc"
  [ "$rc" -eq 124 ] && verdict="TIMED OUT after ${limit}s"
  echo "$name: $verdict in $(($(date +%s) - start)) s" | tee -a "$OUT/run.log"
}

machine() {
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not on PATH"; fi
  echo "nproc: $(nproc)"
  grep -m1 'model name' /proc/cpuinfo
  free -m 2>/dev/null || head -2 /proc/meminfo
  cat /proc/loadavg
  echo "node $(node --version); $(redis-server --version); $(node_modules/@cloudflare/workerd-linux-64/bin/workerd --version)"
}

export -f machine
step machine 30 bash -c machine
step detect 60 node --import tsx scripts/device/detect.ts
# Fails (non-zero) where no WebGPU adapter works; the cpu half and the refusal are in its log.
step webgpu-node 90 node --import tsx scripts/device/webgpu-node.ts "${QUICK[@]}"
step mesh-overhead 240 node --import tsx bench/mesh-overhead.ts "${QUICK[@]}"
if [ ${#QUICK[@]} -gt 0 ]; then levels=32,128; else levels=32,128,256,512,1024; fi
# STREAM_PATHS / STREAM_LEVELS narrow the sweep (a rerun that only needs one path's figures).
step stream-capacity 150 node --import tsx bench/stream-capacity.ts "${QUICK[@]}" --paths=${STREAM_PATHS:-router,ws,sse} --levels=${STREAM_LEVELS:-$levels}
# Added TTFT of the OpenAI surface over in-process decoding (the 2 ms goal of issues 13 and 15).
step openai-surface 90 node --import tsx bench/openai-surface.ts "${QUICK[@]}"
# (bench/zipf-placement.ts runs in virtual time from a seed: the same figures on any machine.)

# The JSON this run wrote (the timestamped copy: a bench stopped at its limit may leave its
# -latest.json empty), and the temp folders (their logs) the harness kept for failed runs.
results=$(mktemp -d)
find bench/results -name '*.json' ! -name '*-latest.json' -size +0 -newer "$marker" -exec cp {} "$results/" \;
for kept in $(grep -ho '\[bench\] kept /[^ ]*' "$OUT"/*.log 2>/dev/null | cut -d' ' -f3); do
  dest="$results/kept-$(basename "$kept")"
  mkdir -p "$dest"
  (cd "$kept" && find . -name '*.log' -size -4M -exec cp --parents {} "$dest/" \;)
done
tar -C "$results" -czf "$OUT/results.tar.gz" .
rm -rf "$results" "$marker"
echo "total: $(($(date +%s) - T0)) s" | tee -a "$OUT/run.log"
echo "--- $OUT:"
ls -la "$OUT"
cat "$OUT/run.log"
