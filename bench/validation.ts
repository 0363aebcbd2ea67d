// What checking an inference request through zod costs against the typed check alone, on a
// small ([1, 4]) and a large ([64, 1024], flat and nested) FP32 tensor. Every figure is a ratio
// against the baseline measured in the same run: today's typed check (formats/tensor.ts
// parseInferRequest). The variants:
//
//   typed          parseInferRequest alone (the baseline; it checks every element)
//   edge (zod)     what the infer route runs: InferRequestSchema (every field but the data's
//                  elements), then the typed check (edge/infer-request.ts checkInferRequest)
//   zod walks data the same schema with `data` as z.array(z.unknown()) (zod visits and copies
//                  every element), then the typed check: why the edge's schema does not
//
// Times are CPU time (this process, all threads), which a machine shared with other work moves
// far less than wall time. Rounds alternate the variants so anything else slows them alike;
// each figure is the median of the rounds' per-call times.
//
// Run: npx tsx bench/validation.ts [--rounds 15] [--quick: 3 rounds]
// Prints a table, writes bench/results/validation-<ISO>.json and validation-latest.json.

import { z } from "zod";
import { checkInferRequest, InferRequestSchema, JsonTensorSchema } from "../edge/infer-request.js";
import type { TensorSpec } from "../formats/datatypes.js";
import { parseInferRequest } from "../formats/tensor.js";
import { QUICK, runBench } from "./harness.js";
import { fmt, printTable, ratio, round, summarize } from "./stats.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const ROUNDS = Number(arg("rounds", QUICK ? "3" : "15"));

const WalkingSchema = InferRequestSchema.extend({ inputs: z.array(JsonTensorSchema.extend({ data: z.array(z.unknown()).optional() })).min(1) });

interface Case {
  name: string;
  body: unknown;
  signature: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  /** Calls per round: about 50 ms of the baseline. */
  calls: number;
}

function tensorCase(rows: number, cols: number, nested: boolean): Case {
  const flat = Array.from({ length: rows * cols }, (_, i) => (i % 97) * 0.25);
  const data = nested ? Array.from({ length: rows }, (_, r) => flat.slice(r * cols, (r + 1) * cols)) : flat;
  // Through JSON, as the edge gets it.
  const body = JSON.parse(JSON.stringify({ id: "bench", inputs: [{ name: "x", datatype: "FP32", shape: [rows, cols], data }] }));
  const signature = { inputs: [{ name: "x", datatype: "FP32" as const, shape: [-1, cols] }], outputs: [{ name: "y", datatype: "FP32" as const, shape: [-1, 1] }] };
  return { name: `[${rows},${cols}]${nested ? " nested" : ""}`, body, signature, calls: 1 };
}

const variants: Record<string, (c: Case) => unknown> = {
  typed: (c) => parseInferRequest(c.body, c.signature),
  "edge (zod)": (c) => checkInferRequest(c.body, c.signature),
  "zod walks data": (c) => {
    WalkingSchema.parse(c.body);
    return parseInferRequest(c.body, c.signature);
  },
};

/** CPU time per call (process.cpuUsage: moves far less than wall time on a shared machine). */
function perCallUs(fn: (c: Case) => unknown, c: Case): number {
  const t0 = process.cpuUsage();
  for (let i = 0; i < c.calls; i++) fn(c);
  const t = process.cpuUsage(t0);
  return (t.user + t.system) / c.calls;
}

await runBench("validation", async (b) => {
  const cases = [tensorCase(1, 4, false), tensorCase(64, 1024, false), tensorCase(64, 1024, true)];
  for (const c of cases) {
    // Calibrate: enough calls for ~50 ms of the baseline per round, after a warm-up.
    for (let i = 0; i < 50; i++) for (const fn of Object.values(variants)) fn(c);
    const one = perCallUs(variants.typed!, { ...c, calls: 50 });
    c.calls = Math.max(5, Math.round(50_000 / Math.max(one, 0.01)));
  }

  const results = cases.map((c) => {
    const samples: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? Object.keys(variants) : Object.keys(variants).reverse();
      for (const k of order) samples[k]!.push(perCallUs(variants[k]!, c));
    }
    const median = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v).p50]));
    return { case: c.name, callsPerRound: c.calls, rounds: ROUNDS, medianUs: median };
  });

  printTable(
    ["tensor", "typed µs (CPU)", "edge (zod) µs", "edge / typed", "zod walks data µs", "walks / typed"],
    results.map((r) => [
      r.case,
      fmt(r.medianUs.typed, 2),
      fmt(r.medianUs["edge (zod)"], 2),
      fmt(ratio(r.medianUs["edge (zod)"]!, r.medianUs.typed!), 3),
      fmt(r.medianUs["zod walks data"], 2),
      fmt(ratio(r.medianUs["zod walks data"]!, r.medianUs.typed!), 3),
    ]),
  );

  await b.saveResults({
    baseline: "typed (parseInferRequest)",
    results: results.map((r) => ({
      ...r,
      medianUs: Object.fromEntries(Object.entries(r.medianUs).map(([k, v]) => [k, round(v!, 3)])),
      edgeOverTyped: round(ratio(r.medianUs["edge (zod)"]!, r.medianUs.typed!), 4),
      walkingOverTyped: round(ratio(r.medianUs["zod walks data"]!, r.medianUs.typed!), 4),
    })),
  });
});
