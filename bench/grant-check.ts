// What checking one signed request costs a router: verifyRequest (the MAC over the headers) and
// bodyMatches (the body's SHA-256 against the signed one), as regions/authority.ts runs them for
// every call and every stream start. Baseline: WebCrypto, which the router used until it installed
// node:crypto's primitives (runtime/node-crypto.ts); in Node each WebCrypto digest or MAC is a job
// on libuv's thread pool. Bodies: a generate request (600 B), a [64,1024] FP32 call (256 KiB,
// hashed off the event loop either way), and one just under the inline bound.
//
// Rounds alternate the two so anything else on the machine slows both alike; each figure is the
// median over rounds of the per-check wall and CPU time (this process).
//
// Run: npm run bench:grants [-- --rounds 9]
// Prints a table, writes bench/results/grant-check-<ISO>.json and grant-check-latest.json.

import { bodyMatches, signRequest, useCryptoPrimitives, verifyRequest, webCryptoPrimitives, type CryptoPrimitives, type SignedRequest } from "../protocol/signing.js";
import { INLINE_HASH_BYTES, nodeCryptoPrimitives } from "../runtime/node-crypto.js";
import { fmt, machineInfo, printTable, ratio, round, summarize, writeResults } from "./stats.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const QUICK = process.argv.includes("--quick") || process.env.BENCH_QUICK === "1";
const ROUNDS = Number(arg("rounds", QUICK ? "3" : "9"));
const SECRET = "a-region-secret-of-thirty-two-ch";

async function perCheck(p: CryptoPrimitives, body: Uint8Array, headers: Record<string, string>, n: number): Promise<{ wallUs: number; cpuUs: number }> {
  useCryptoPrimitives(p);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const signed = await verifyRequest(SECRET, "POST", "/v1/infer", (k) => headers[k]);
    if (!signed.ok || !(await bodyMatches(signed as SignedRequest, body))) throw new Error("check failed");
  }
  const c = process.cpuUsage(c0);
  return { wallUs: ((performance.now() - t0) * 1000) / n, cpuUs: (c.user + c.system) / n };
}

const cases = [
  { name: "generate request (600 B)", bytes: 600, calls: QUICK ? 500 : 2000 },
  { name: `body of ${INLINE_HASH_BYTES - 1} B (inline bound)`, bytes: INLINE_HASH_BYTES - 1, calls: QUICK ? 100 : 400 },
  { name: "[64,1024] FP32 call (256 KiB)", bytes: 256 * 1024, calls: QUICK ? 30 : 100 },
];

const results = [];
for (const c of cases) {
  const body = new Uint8Array(c.bytes).map((_, i) => (i * 131 + 7) & 0xff);
  useCryptoPrimitives(webCryptoPrimitives);
  const headers = await signRequest(SECRET, "POST", "/v1/infer", body);
  const web = { wall: [] as number[], cpu: [] as number[] };
  const node = { wall: [] as number[], cpu: [] as number[] };
  await perCheck(nodeCryptoPrimitives, body, headers, 20); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    const w = await perCheck(webCryptoPrimitives, body, headers, c.calls);
    const n = await perCheck(nodeCryptoPrimitives, body, headers, c.calls);
    web.wall.push(w.wallUs), web.cpu.push(w.cpuUs), node.wall.push(n.wallUs), node.cpu.push(n.cpuUs);
  }
  const med = (xs: number[]) => summarize(xs).p50;
  results.push({
    case: c.name,
    webWallUs: med(web.wall),
    webCpuUs: med(web.cpu),
    nodeWallUs: med(node.wall),
    nodeCpuUs: med(node.cpu),
    wallRatio: ratio(med(node.wall), med(web.wall)),
    cpuRatio: ratio(med(node.cpu), med(web.cpu)),
  });
}
useCryptoPrimitives(webCryptoPrimitives);

printTable(
  ["request checked", "WebCrypto wall µs (baseline)", "CPU µs", "node:crypto wall µs", "CPU µs", "wall ratio", "CPU ratio"],
  results.map((r) => [r.case, fmt(r.webWallUs, 1), fmt(r.webCpuUs, 1), fmt(r.nodeWallUs, 1), fmt(r.nodeCpuUs, 1), fmt(r.wallRatio, 2), fmt(r.cpuRatio, 2)]),
);
const saved = await writeResults("grant-check", {
  machine: machineInfo(),
  baseline: "WebCrypto (the router's primitives before runtime/node-crypto.ts)",
  rounds: ROUNDS,
  results: results.map((r) => ({ ...r, webWallUs: round(r.webWallUs, 2), webCpuUs: round(r.webCpuUs, 2), nodeWallUs: round(r.nodeWallUs, 2), nodeCpuUs: round(r.nodeCpuUs, 2) })),
});
process.stdout.write(`\nresults: ${saved.file}\n         ${saved.latest}\n`);
