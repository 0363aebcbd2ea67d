// One model session in its own process: the agent forks this file per worker of a loaded model
// (gpu-node/session-process.ts) and talks to it over the IPC channel. onnxruntime's create()
// and run() block this process's thread, never the agent's, and the agent can SIGKILL it to
// stop a run that is past its deadline or cancelled, or a load that grows past its memory
// bound. Messages are those of session-process.ts (ChildRequest / ChildReply). Generations run
// here too, beside the model (child-generations.ts): the agent forwards their frames.

import * as ort from "onnxruntime-node";
import { MAX_FRAME_BYTES } from "../protocol/messages.js";
import type { WireTensor } from "../formats/tensor.js";
import { ChildGenerations, type GenRequest } from "./child-generations.js";
import { fromOrt, toOrt } from "./ort-tensors.js";
import type { ChildReply, ChildRequest } from "./session-process.js";

/**
 * An answer must fit one frame to the router with room to spare. Checked here, before the
 * outputs cross to the agent: a huge answer would also hold the agent's loop while it is copied.
 */
const MAX_ANSWER_BYTES = MAX_FRAME_BYTES - 256 * 1024;

/** An upper bound on the encoded size of output tensors (msgpack adds a few bytes to each). */
function answerBytes(outputs: WireTensor[]): number {
  let n = 0;
  for (const o of outputs) {
    n += 64 + o.name.length + o.shape.length * 9;
    if (Array.isArray(o.data)) for (const s of o.data as string[]) n += 5 + Buffer.byteLength(s);
    else n += (o.data as ArrayBufferView).byteLength;
  }
  return n;
}

let session: ort.InferenceSession | null = null;
let generations: ChildGenerations | null = null;
/** This process's memory before any model: what the load adds is measured from it. */
const startRss = process.memoryUsage().rss;

const reply = (m: ChildReply) => process.send?.(m);

// The agent is the only reason to live: without it nobody reads the results.
process.on("disconnect", () => process.exit(0));
// Signals to the whole process group (Ctrl-C in a terminal, systemd's default KillMode, a
// harness's kill(-pid)) are the agent's to act on: a draining agent still needs its sessions to
// finish the calls in flight, and it ends them itself (or they see it go, above).
process.on("SIGTERM", () => undefined);
process.on("SIGINT", () => undefined);

const isGen = (m: ChildRequest): m is GenRequest => m.t === "gen" || m.t === "gen_credit" || m.t === "gen_cancel";

process.on("message", (m: ChildRequest) => {
  if (isGen(m)) {
    if (generations) generations.handle(m);
    else if (m.t === "gen") reply({ t: "gen_failed", id: m.id, message: "no session loaded in this worker", known: true });
    return;
  }
  void (async () => {
    if (m.t === "load") {
      try {
        session = await ort.InferenceSession.create(m.path, {
          executionProviders: m.executionProviders,
          graphOptimizationLevel: "all",
          intraOpNumThreads: m.threads,
          interOpNumThreads: 1,
          // onnxruntime reads these session config entries as strings (gpu-node/config.ts, ortSpinning).
          extra: { session: { intra_op: { allow_spinning: m.spinning ? "1" : "0" }, inter_op: { allow_spinning: m.spinning ? "1" : "0" } } },
        });
        // The KV caches get what the model's memory bound leaves after the load.
        const loaded = process.memoryUsage().rss - startRss;
        generations = new ChildGenerations(session, m.path, reply, m.memoryLimitBytes !== undefined ? Math.max(0, m.memoryLimitBytes - loaded) : Infinity);
        reply({ t: "loaded", inputNames: [...session.inputNames], outputNames: [...session.outputNames], rssBytes: process.memoryUsage().rss });
      } catch (err) {
        reply({ t: "load_failed", message: String((err as Error).message ?? err) });
      }
      return;
    }
    if (m.t === "run") {
      const started = performance.now();
      try {
        if (!session) throw new Error("no session loaded in this worker");
        const feeds: Record<string, ort.Tensor> = {};
        for (const t of m.inputs) feeds[t.name] = toOrt(t);
        const fetches = m.outputs ?? session.outputNames;
        const result = await session.run(feeds, fetches as string[]);
        const outputs = fetches.map((name) => fromOrt(name, result[name]));
        const bytes = answerBytes(outputs);
        if (bytes > MAX_ANSWER_BYTES) {
          const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
          reply({
            t: "failed",
            id: m.id,
            kind: "too_large",
            message: `the answer would be ${mib(bytes)} MiB, over the ${mib(MAX_ANSWER_BYTES)} MiB a node sends; ask for fewer or smaller outputs`,
            computeMs: performance.now() - started,
          });
          return;
        }
        reply({ t: "result", id: m.id, outputs, computeMs: performance.now() - started });
      } catch (err) {
        reply({ t: "failed", id: m.id, message: String((err as Error).message ?? err), computeMs: performance.now() - started });
      }
    }
  })();
});

reply({ t: "ready", rssBytes: process.memoryUsage().rss });
