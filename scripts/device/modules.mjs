// Lists the node_modules package folders the device kit keeps (scripts/device/pack.sh): the
// closure, by Node's own lookup (nested node_modules first, then upwards), of the runtime
// packages the benches and the local mesh load. A closure over declared dependencies rather
// than a trace of one run, so a module a package loads only on some path (an error, a flag) is
// there too; pack.sh then drops the big files no run here opens (other platforms' binaries).
// Usage: node scripts/device/modules.mjs <node_modules dir>   (one path per line, relative to it)

import { existsSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";

const nm = process.argv[2];
if (!nm) throw new Error("usage: modules.mjs <node_modules dir>");
const root = dirname(nm);
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));

// Every runtime dependency, and the dev dependencies a bench or the local mesh runs:
// tsx (every TypeScript entry point), wrangler + miniflare (the edge: bundle, D1, workerd),
// ioredis (local/redis-server.ts), esbuild (scripts/build-pages.ts), onnx-proto and protobufjs
// (scripts/onnx-writer.ts writes the demo models), openai (bench/openai-surface.ts: the official client).
const roots = [...Object.keys(pkg.dependencies ?? {}), "tsx", "wrangler", "miniflare", "ioredis", "esbuild", "onnx-proto", "protobufjs", "openai"];

/** The folder `name` resolves to from a package at `from` (a folder), as Node looks it up. */
function resolvePkg(name, from) {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = dir.endsWith("/node_modules") ? join(dir, name) : join(dir, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return candidate;
    if (dir === root || dir === dirname(dir)) return null;
  }
}

const keep = new Set();
const queue = roots.map((name) => resolvePkg(name, root));
for (const [i, dir] of queue.entries()) if (dir === null) throw new Error(`root package ${roots[i]} is not installed`);
while (queue.length) {
  const dir = queue.pop();
  if (keep.has(dir)) continue;
  keep.add(dir);
  const p = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  // Optional dependencies not installed here are other platforms' binaries: skipped.
  for (const name of Object.keys({ ...p.dependencies, ...p.optionalDependencies })) {
    const found = resolvePkg(name, dir);
    if (found !== null) queue.push(found);
  }
}
for (const dir of [...keep].sort()) console.log(relative(nm, dir));
