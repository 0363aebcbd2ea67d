// What validating a decoded wire message costs with the zod schemas of protocol/messages.ts
// against the hand-written validators they replaced (issue 12), on the messages every call or
// token pays for: a small RegionInferRequest ([1, 4] FP32), a large one ([64, 1024] FP32), both
// with packed tensors as the edge sends them; a node's heartbeat; a node's generation token
// frame and the region's token frame to the edge, alone and 64 in a batch. Every message is encoded and decoded through
// the mesh's codec (msgpackr) first, so both validators see what a router or node sees.
//
//   hand (baseline)  bench/wire-baseline.ts: the old validators, copied unchanged
//   zod              protocol/messages.ts's parse functions as Node runs them: the schemas
//                    compiled ahead of time (z.compile), the interpreter only for refusals
//   zod interpreted  the same schemas uncompiled (safeParse), as the Worker runs them: workerd
//                    allows no `new Function`, so the edge cannot compile. The messages the edge
//                    reads (the answer to a call, the region's token frames) have typed fast
//                    paths for this (messages.ts fastPath); the others are read only in Node,
//                    and their interpreted figure is for reference.
//
// Times are CPU time (this process), which a machine shared with other work moves far less than
// wall time. Rounds alternate the variants so anything else slows them alike; each figure is the
// median of the rounds' per-call times. Both variants must return equal values (checked first).
//
// Run: npm run bench:wire [-- --rounds 15]
// Prints a table, writes bench/results/wire-validation-<ISO>.json and wire-validation-latest.json.

import { deepStrictEqual } from "node:assert";
import type { z } from "zod";
import { packTensor } from "../formats/binary-tensors.js";
import { createCodec } from "../protocol/codec.js";
import * as zod from "../protocol/messages.js";
import * as hand from "./wire-baseline.js";
import { fmt, machineInfo, printTable, ratio, round, summarize, writeResults } from "./stats.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const ROUNDS = Number(arg("rounds", "15"));
const codec = createCodec("msgpack");

interface Case {
  name: string;
  /** Who parses it in the mesh: a router or node (Node, compiled) or the edge (Worker, interpreted). */
  reader: "Node" | "Worker";
  /** The decoded message, as a receiver holds it. */
  decoded: unknown;
  hand: (v: unknown) => unknown;
  zod: (v: unknown) => unknown;
  interpreted: (v: unknown) => unknown;
  /** Calls per round: about 50 ms of the baseline (calibrated below). */
  calls: number;
}

/** A schema run by zod's interpreter, uncompiled (what the Worker does). */
function interpret(schema: z.ZodType): (v: unknown) => unknown {
  return (v) => {
    const r = schema.safeParse(v);
    if (!r.success) throw new Error(r.error.issues[0]?.message);
    return r.data;
  };
}

const model: zod.ModelRef = {
  key: "acct/model@3",
  account: "acct",
  name: "model",
  version: 3,
  sha256: "a".repeat(64),
  size: 1_234_567,
  artifactUrl: "https://r2.example/artifacts/acct/model/3?sig=abcdef&exp=1700000000",
  signature: { inputs: [{ name: "x", datatype: "FP32", shape: [-1, 1024] }], outputs: [{ name: "y", datatype: "FP32", shape: [-1, 1] }] },
};

function inferRequest(rows: number, cols: number): Case {
  const data = Float32Array.from({ length: rows * cols }, (_, i) => (i % 97) * 0.25);
  const req: zod.RegionInferRequest = {
    requestId: "req-0123456789abcdef",
    model,
    inputs: [packTensor({ name: "x", datatype: "FP32", shape: [rows, cols], data })],
    outputs: ["y"],
    deadline: 1_700_000_000_000,
  };
  return { name: `RegionInferRequest [${rows},${cols}] packed`, reader: "Node", decoded: codec.decode(codec.encode(req)), hand: hand.parseRegionInferRequest, zod: zod.parseRegionInferRequest, interpreted: interpret(zod.wireSchemas.regionInferRequest), calls: 1 };
}

/** What the edge reads back per call (the Worker runs this one interpreted). */
function inferResponse(rows: number, cols: number): Case {
  const data = Float32Array.from({ length: rows * cols }, (_, i) => i * 0.5);
  const res: zod.RegionInferResponse = {
    ok: true,
    outputs: [packTensor({ name: "y", datatype: "FP32", shape: [rows, cols], data })],
    node: "node-a1",
    timing: { queueMs: 0.2, loadMs: 0, inferMs: 1.4, regionMs: 2.1, computeMs: 1.3, trace: { router: "0123456789abcdef", node: "fedcba9876543210" } },
  };
  const decoded = codec.decode(codec.encode(res));
  return { name: `RegionInferResponse [${rows},${cols}] packed`, reader: "Worker", decoded, hand: hand.parseRegionInferResponse, zod: zod.parseRegionInferResponse, interpreted: interpret(zod.wireSchemas.regionInferResponse), calls: 1 };
}

const heartbeat: zod.NodeToRouter = {
  t: "heartbeat",
  inflight: 3,
  queued: 1,
  utilisation: 0.42,
  warm: Array.from({ length: 4 }, (_, i) => ({ key: `acct/model-${i}@1`, memoryMb: 512 + i, lastUsed: 1_700_000_000_000 + i })),
  gen: { active: 2, tokens: 123_456 },
  mem: { rssMb: 2048.5, heapUsedMb: 301.2 },
  runs: 98_765,
  disk: { cacheBudgetBytes: 50 * 2 ** 30, cacheUsedBytes: 12 * 2 ** 30, cachePinnedBytes: 2 * 2 ** 30, freeBytes: 80 * 2 ** 30 },
  affinity: Array.from({ length: 8 }, (_, i) => ({ key: i.toString(16).padStart(32, "0"), savedMs: 12.5 * i })),
};
const nodeToken: zod.NodeToRouter = { t: "token", id: "req-0123456789abcdef", i: 41, text: " the", tokenId: 262 };
const edgeToken: zod.RegionToEdge = { t: "token", sid: "s-17", i: 41, text: " the", id: 262 };

/**
 * A batch of 64 token frames region -> edge (`{t:"batch"}`, what a batching region sends when a
 * decoder step makes a token for 64 streams), read as the edge reads it: messages.ts unbatch.
 * The hand baseline checks the batch by hand (the old validators had none) and each item with
 * the old token check. "before" is the same batch with the batch frame's and the direction's
 * schemas as they were, without their fast paths (fastPathSchemas' plain: the token frame's own
 * fast path inside the union stays, as it was), so before and after are measured in one run.
 */
const edgeBatch = { t: "batch", frames: Array.from({ length: 64 }, (_, i) => ({ ...edgeToken, sid: `s-${i}`, i })) };
const handBatch = (v: unknown) => {
  const b = v as { t?: unknown; frames?: unknown };
  if (typeof v !== "object" || v === null || b.t !== "batch" || !Array.isArray(b.frames) || b.frames.length > zod.MAX_BATCH_FRAMES) throw new Error("bad batch");
  return b.frames.map(hand.parseRegionToEdge);
};
const plainSchema = (name: string) => zod.fastPathSchemas.find((f) => f.name === name)!.plain;
const interpretedBatch = (batchSchema: z.ZodType, itemSchema: z.ZodType) => {
  const batch = interpret(batchSchema);
  const item = interpret(itemSchema);
  return (v: unknown) => (batch(v) as { frames: unknown[] }).frames.map(item);
};
const batchCase = (name: string, batchSchema: z.ZodType, itemSchema: z.ZodType): Case => ({
  name,
  reader: "Worker",
  decoded: codec.decode(codec.encode(edgeBatch)),
  hand: handBatch,
  zod: (v) => zod.unbatch(v, zod.parseRegionToEdge),
  interpreted: interpretedBatch(batchSchema, itemSchema),
  calls: 1,
});

const cases: Case[] = [
  inferRequest(1, 4),
  inferRequest(64, 1024),
  inferResponse(1, 4),
  { name: "heartbeat (4 warm, 8 affinity)", reader: "Node", decoded: codec.decode(codec.encode(heartbeat)), hand: hand.parseNodeMessage, zod: zod.parseNodeMessage, interpreted: interpret(zod.wireSchemas.nodeToRouter), calls: 1 },
  { name: "token node -> router", reader: "Node", decoded: codec.decode(codec.encode(nodeToken)), hand: hand.parseNodeMessage, zod: zod.parseNodeMessage, interpreted: interpret(zod.wireSchemas.nodeToRouter), calls: 1 },
  { name: "token region -> edge", reader: "Worker", decoded: codec.decode(codec.encode(edgeToken)), hand: hand.parseRegionToEdge, zod: zod.parseRegionToEdge, interpreted: interpret(zod.wireSchemas.regionToEdge), calls: 1 },
  { name: "token region -> edge, before (token fast path in the union only)", reader: "Worker", decoded: codec.decode(codec.encode(edgeToken)), hand: hand.parseRegionToEdge, zod: zod.parseRegionToEdge, interpreted: interpret(plainSchema("region -> edge")), calls: 1 },
  batchCase("batch of 64 tokens region -> edge, before (no batch or union fast path)", plainSchema("batch"), plainSchema("region -> edge")),
  batchCase("batch of 64 tokens region -> edge", zod.wireSchemas.batch, zod.wireSchemas.regionToEdge),
];

const VARIANTS = ["hand", "zod", "interpreted"] as const;

/** CPU time per call (process.cpuUsage: moves far less than wall time on a shared machine). */
function perCallUs(fn: (v: unknown) => unknown, c: Case, calls = c.calls): number {
  const t0 = process.cpuUsage();
  for (let i = 0; i < calls; i++) fn(c.decoded);
  const t = process.cpuUsage(t0);
  return (t.user + t.system) / calls;
}

for (const c of cases) {
  deepStrictEqual(c.zod(c.decoded), c.hand(c.decoded), `${c.name}: the schemas and the baseline disagree`);
  deepStrictEqual(c.interpreted(c.decoded), c.hand(c.decoded), `${c.name}: the interpreted schemas and the baseline disagree`);
  // Warm up (lets V8 and zod's compiled object parsers settle), then calibrate on the baseline.
  for (let i = 0; i < 2_000; i++) for (const v of VARIANTS) c[v](c.decoded);
  const one = perCallUs(c.hand, c, 2_000);
  c.calls = Math.max(50, Math.round(50_000 / Math.max(one, 0.01)));
}

const results = cases.map((c) => {
  const samples: Record<(typeof VARIANTS)[number], number[]> = { hand: [], zod: [], interpreted: [] };
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
    for (const v of order) samples[v].push(perCallUs(c[v], c));
  }
  const handUs = summarize(samples.hand).p50;
  const zodUs = summarize(samples.zod).p50;
  const interpretedUs = summarize(samples.interpreted).p50;
  return {
    case: c.name,
    reader: c.reader,
    callsPerRound: c.calls,
    rounds: ROUNDS,
    handUs,
    zodUs,
    interpretedUs,
    zodOverHand: ratio(zodUs, handUs),
    interpretedOverHand: ratio(interpretedUs, handUs),
  };
});

printTable(
  ["message (msgpack-decoded)", "read by", "hand µs (baseline)", "zod µs (Node)", "zod / hand", "interpreted µs (Worker)", "interpreted / hand"],
  results.map((r) => [r.case, r.reader, fmt(r.handUs, 3), fmt(r.zodUs, 3), fmt(r.zodOverHand, 3), fmt(r.interpretedUs, 3), fmt(r.interpretedOverHand, 3)]),
);

const saved = await writeResults("wire-validation", {
  machine: machineInfo(),
  baseline: "hand (bench/wire-baseline.ts, the validators before issue 12)",
  results: results.map((r) => ({
    ...r,
    handUs: round(r.handUs, 4),
    zodUs: round(r.zodUs, 4),
    interpretedUs: round(r.interpretedUs, 4),
    zodOverHand: round(r.zodOverHand, 4),
    interpretedOverHand: round(r.interpretedOverHand, 4),
  })),
});
console.log(`results: ${saved.file}`);
