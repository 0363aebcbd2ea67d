#!/usr/bin/env bash
# Unpacks one part of the device kit (scripts/device/pack.sh) into .devbin/ at the repository
# root: A first (node at .devbin/bin/node, workerd where miniflare's `workerd` package looks for
# it, under .devbin/node_modules), then B (the rest of .devbin/node_modules, redis-server on
# .devbin/bin), which also links ./node_modules to .devbin/node_modules for tsx, wrangler and
# the mesh launcher (they resolve packages from the checkout). Each part says what runs.
# Usage: scripts/device/unpack.sh A|B
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
case "${1:-}" in
  A | a) part=a ;;
  B | b) part=b ;;
  *) echo "usage: $0 A|B" >&2; exit 2 ;;
esac
archive=.devkit/$part/kit-$part.tar.xz
[ -f "$archive" ] || { echo "unpack.sh: $archive is not here (carry .devkit/$part)" >&2; exit 1; }
if [ "$part" = b ] && [ ! -x .devbin/bin/node ]; then echo "unpack.sh: unpack A first (.devbin/bin/node missing)" >&2; exit 1; fi

mkdir -p .devbin
start=$(date +%s)
if command -v xz >/dev/null; then
  xz -dc "$archive" | tar -C .devbin -xf -
else # no xz-utils: Python's lzma reads the same stream
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$archive" | tar -C .devbin -xf -
fi
echo "unpacked $archive into .devbin/ in $(($(date +%s) - start)) s ($(du -sh .devbin | cut -f1) in all)"

if [ "$part" = a ]; then
  echo "node $(.devbin/bin/node --version)"
  .devbin/node_modules/@cloudflare/workerd-linux-64/bin/workerd --version
  exit 0
fi

if [ -L node_modules ] || [ ! -e node_modules ]; then
  ln -sfn .devbin/node_modules node_modules
else
  echo "unpack.sh: ./node_modules is a real folder here; left as it is (the kit's is .devbin/node_modules)" >&2
fi
.devbin/bin/redis-server --version
echo "onnxruntime-node: $(.devbin/bin/node -e 'console.log(JSON.stringify(require("onnxruntime-node").listSupportedBackends()))')"
