#!/usr/bin/env bash
# Packs what the benches need on a machine that has no Node.js, no redis-server and no network
# (the lent GPU machine, docs/benchmarks.md "Running the benches on a GPU machine") into two
# parts, each small enough to travel in one device call beside the working tree (64 MiB a call):
#   .devkit/a/kit-a.tar.xz   node, workerd (the two biggest binaries)
#   .devkit/b/kit-b.tar.xz   node_modules pruned to what runs (scripts/device/modules.mjs), with
#                            only linux-x64's onnxruntime binaries; redis-server and the shared
#                            libraries it links that a stock Ubuntu image may lack
# scripts/device/unpack.sh A|B unpacks them into .devbin/ there, scripts/device/run.sh runs.
# Run from a checkout with node_modules installed, on x86-64 Linux with node and redis-server.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PART_LIMIT=$((60 * 1024 * 1024))

[ "$(uname -m)" = x86_64 ] || { echo "pack.sh: the GPU machine is x86-64; this is $(uname -m)" >&2; exit 1; }
# Untracked and not ignored, .devkit would travel in every call and blow the 64 MiB limit.
{ git check-ignore -q .devkit/x && git check-ignore -q .devbin/x; } || { echo "pack.sh: .devkit/ and .devbin/ must be in .gitignore" >&2; exit 1; }
NM=$(readlink -f node_modules)
NODE=$(readlink -f "$(command -v node)")
REDIS=$(readlink -f "$(command -v redis-server)")
WORKERD=@cloudflare/workerd-linux-64/bin/workerd
[ -x "$NM/$WORKERD" ] || { echo "pack.sh: $NM/$WORKERD missing (npm ci first)" >&2; exit 1; }

rm -rf .devkit
mkdir -p .devkit/a .devkit/b .devkit/stage-a/bin .devkit/stage-b/node_modules .devkit/stage-b/bin .devkit/stage-b/libexec .devkit/stage-b/lib
# Staged as hard links where the file system allows (nothing in a stage is ever written to).
if [ "$(stat -c %d "$NM")" = "$(stat -c %d .devkit)" ]; then link() { cp -al "$1" "$2"; }; else link() { cp -a "$1" "$2"; }; fi

# --- part A: node and workerd ---
cp "$NODE" .devkit/stage-a/bin/node
mkdir -p ".devkit/stage-a/node_modules/$(dirname "$WORKERD")" .devkit/stage-a/node_modules/workerd/bin
cp "$NM/$WORKERD" ".devkit/stage-a/node_modules/$WORKERD"
# The workerd package's own bin (npm hard-links it to the platform binary); tar stores it once.
ln ".devkit/stage-a/node_modules/$WORKERD" .devkit/stage-a/node_modules/workerd/bin/workerd

# --- part B: node_modules ---
node scripts/device/modules.mjs "$NM" >.devkit/modules.txt
# Top-level entries only: a kept package's nested node_modules come with it.
prev=""
while read -r dir; do
  if [ -n "$prev" ] && [[ "$dir" == "$prev"/* ]]; then continue; fi
  prev=$dir
  mkdir -p ".devkit/stage-b/node_modules/$(dirname "$dir")"
  link "$NM/$dir" ".devkit/stage-b/node_modules/$dir"
done <.devkit/modules.txt
S=.devkit/stage-b/node_modules
# Other platforms' binaries; workerd travels in part A; sharp's libvips (Miniflare's images
# binding, unused); protobufjs's CLI (pbjs/pbts); type declarations.
rm -rf "$S"/onnxruntime-node/bin/napi-v6/{darwin,win32} "$S"/onnxruntime-node/bin/napi-v6/linux/arm64 \
  "$S/$WORKERD" "$S"/workerd/bin/workerd "$S"/@img "$S"/protobufjs/cli "$S"/@types
find "$S" -name '*.d.ts' -delete -o -name '*.d.mts' -delete -o -name '*.d.cts' -delete
# Something reads typescript's package.json (its version) and copes without the package.
mkdir -p "$S/typescript" && cp "$NM/typescript/package.json" "$S/typescript/"

# --- part B: redis-server and the libraries it links beyond glibc and libstdc++ ---
cp "$REDIS" .devkit/stage-b/libexec/redis-server
ldd "$REDIS" | awk '/=> \//{print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libstdc++.so.*|libgcc_s.so.*|ld-linux*) ;;
    *) cp -L "$lib" .devkit/stage-b/lib/ ;;
  esac
done
# The libraries only for redis-server: on everything's LD_LIBRARY_PATH they could shadow the
# image's own (nvidia-smi, the CUDA libraries).
cat >.devkit/stage-b/bin/redis-server <<'EOF'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")/..
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/libexec/redis-server" "$@"
EOF
chmod +x .devkit/stage-b/bin/redis-server

# --- compress ---
pack() { # stage, archive
  tar -C "$1" -cf - . | xz -T0 -6 >"$2"
  rm -rf "$1"
}
pack .devkit/stage-a .devkit/a/kit-a.tar.xz &
pack .devkit/stage-b .devkit/b/kit-b.tar.xz
wait

# The working tree travels with each part: tracked and untracked-not-ignored files.
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
status=0
for p in a/kit-a.tar.xz b/kit-b.tar.xz; do
  size=$(stat -c %s ".devkit/$p")
  awk -v p="$p" -v s="$size" -v t="$tree" 'BEGIN { m = 1048576; printf "%-16s %10d bytes (%5.1f MiB); with the working tree (%.1f MiB): %.1f MiB of 64\n", p, s, s / m, t / m, (s + t) / m }'
  [ "$size" -lt "$PART_LIMIT" ] || { echo "pack.sh: $p is over 60 MiB" >&2; status=1; }
done
exit $status
