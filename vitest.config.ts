// Two projects. `unit`: tests of one module's logic (fakes allowed, no mesh processes, no fixed
// ports), run in parallel. `e2e`: everything that starts the real parts (workerd through
// Miniflare, routers, node agents, redis-server, Chromium) as child processes; they get long
// timeouts and run one file at a time, after the units, so that on a 2-core machine one mesh
// does not starve another's heartbeats. A new test file is end-to-end unless listed here.
import { defineConfig } from "vitest/config";

const UNIT = [
  "batcher",
  "config-schema",
  "d1-retry",
  "belady",
  "binary-tensors-codec",
  "decode-loop",
  "decoder-engine",
  "edge-layered-cache",
  "edge-limits",
  "edge-traffic",
  "frame-batch",
  "generate",
  "generate-wire",
  "generative-bundle",
  "idempotency",
  "latency-histogram",
  "latency-model",
  "link-table",
  "node-link",
  "onnx-signature-crosscheck",
  "onnx-signature-stream",
  "onnx-signature",
  "openai-format",
  "affinity-choice",
  "placement",
  "plaintext",
  "prefix-cache",
  "prefix-keys",
  "protocol-codec",
  "protocol-frame-stream",
  "protocol-signing",
  "protocol-tensor",
  "region-client",
  "request-schemas",
  "run-errors",
  "scheduler-fairness",
  "tiny-gpt-model",
  "token-text",
  "trace-context",
  "uploads-state",
  "wire-schema",
  "wire-version",
].map((n) => `test/${n}.test.ts`);

export default defineConfig({
  test: {
    reporters: ["default"],
    projects: [
      {
        test: {
          name: "unit",
          include: UNIT,
          testTimeout: 60_000,
          setupFiles: ["test/setup/local-agent.ts"],
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/**/*.test.ts"],
          exclude: UNIT,
          testTimeout: 60_000,
          hookTimeout: 120_000,
          setupFiles: ["test/setup/local-agent.ts"],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
