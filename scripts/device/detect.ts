// What a node agent would decide about its accelerator on this machine, printed as one JSON
// object: the GPU nvidia-smi reports, the execution provider chosen for the default setting
// (MESH_EXECUTION_PROVIDER unset, i.e. "auto") and why, whether "cuda" and "webgpu" would be refused, and the
// memory budget the agent would take with MEMORY_BUDGET_MB unset. It calls the agent's own code
// (gpu-node/accelerator.ts, gpu-node/config.ts) so a GPU machine checks what the agent runs,
// not a copy. Run by scripts/device/run.sh; exits 0 whatever it finds (the JSON says).

import { randomBytes } from "node:crypto";
import * as ort from "onnxruntime-node";
import { chooseProvider, detectGpu, memoryBudgetOf } from "../../gpu-node/accelerator.js";
import { nodeConfigFromEnv } from "../../gpu-node/config.js";

// The settings a node cannot start without, so the config reads; nothing connects anywhere.
const config = nodeConfigFromEnv({
  ...process.env,
  ROUTER_URL: "ws://127.0.0.1:1/v1/nodes",
  NODE_TOKEN: randomBytes(24).toString("base64url"),
});
const gpu = detectGpu();
const auto = chooseProvider(config.executionProvider);
let cuda: unknown;
try {
  cuda = chooseProvider("cuda");
} catch (err) {
  cuda = { refused: (err as Error).message };
}
let webgpu: unknown;
try {
  webgpu = chooseProvider("webgpu");
} catch (err) {
  webgpu = { refused: (err as Error).message };
}
const budgetMb = memoryBudgetOf(config.memoryBudgetMb, auto);

console.log(
  JSON.stringify(
    {
      onnxruntime: { version: ort.env.versions.common, backends: ort.listSupportedBackends() },
      configuredProvider: config.executionProvider,
      memoryBudgetMbSetting: config.memoryBudgetMb,
      detectGpu: gpu,
      chooseProvider: auto,
      chooseProviderCuda: cuda,
      chooseProviderWebgpu: webgpu,
      memoryBudgetMb: budgetMb,
      checks: {
        gpuFound: gpu !== null,
        cudaProviderBundled: ort.listSupportedBackends().some((b) => b.name === "cuda" && b.bundled),
        // The budget is where the models live: the GPU's memory on CUDA, RAM when they run on CPU.
        budgetFollowsProvider: config.memoryBudgetMb !== null || budgetMb === auto.modelMemoryMb,
      },
    },
    null,
    2,
  ),
);
