// What this node runs on, and the one place that decides onnxruntime's execution provider:
// CUDA when the machine has an NVIDIA GPU and this onnxruntime build carries the CUDA provider,
// CPU otherwise; WebGPU (Dawn over Vulkan, bundled with onnxruntime-node) only when configured,
// after a tiny session has run on it. It always says which, and why, so nobody guesses from latency.

import { execFile, execFileSync, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { totalmem } from "node:os";
import * as ort from "onnxruntime-node";
import { ConfigError } from "../protocol/config-schema.js";
import type { Accelerator } from "../protocol/messages.js";
import type { ProviderChoice } from "./config.js";

export interface ProviderDecision {
  accelerator: Accelerator;
  executionProviders: string[];
  /** Short name for reports: "cuda", "webgpu" or "cpu". */
  name: string;
  reason: string;
  /**
   * Memory the models will live in, MiB: the GPU's on CUDA and on WebGPU (when nvidia-smi reports
   * it), the machine's RAM on CPU (also on a GPU machine whose onnxruntime build has no CUDA
   * provider: the GPU's size is no budget there).
   */
  modelMemoryMb: number;
}

/** What chooseProvider looks at; tests pass their own. */
export interface ProviderProbe {
  gpu(): Accelerator | null;
  cudaProvider(): boolean;
  /** Whether a WebGPU session really runs here; asked only when MESH_EXECUTION_PROVIDER=webgpu. */
  webgpuAdapter(): WebgpuCheck;
  ramMb(): number;
}

export type WebgpuCheck = { ok: true } | { ok: false; error: string };

export function detectGpu(): Accelerator | null {
  try {
    const out = execFileSync("nvidia-smi", ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"], {
      encoding: "utf8",
      timeout: 5_000,
      stdio: ["ignore", "pipe", "ignore"],
    });
    const first = out.trim().split("\n")[0];
    if (!first) return null;
    const [name, mem] = first.split(",").map((s) => s.trim());
    return { kind: "gpu", name: name ?? "NVIDIA GPU", memoryMb: Number(mem) || 0 };
  } catch {
    return null;
  }
}

/**
 * GPU memory a process holds, MiB, from nvidia-smi's compute-apps list; null when nvidia-smi
 * is missing or does not list the process. A session on CUDA keeps its weights there, which
 * its RSS does not show.
 */
export function gpuMemoryOfPid(pid: number): Promise<number | null> {
  return new Promise((resolve) => {
    execFile(
      "nvidia-smi",
      ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
      { encoding: "utf8", timeout: 5_000 },
      (err, out) => {
        if (err) return resolve(null);
        let total: number | null = null;
        for (const line of out.trim().split("\n")) {
          const [p, mib] = line.split(",").map((s) => Number(s.trim()));
          if (p === pid && Number.isFinite(mib)) total = (total ?? 0) + mib!;
        }
        resolve(total);
      },
    );
  });
}

/** Memory the node may fill with models: MEMORY_BUDGET_MB when set, else where the models live (the GPU's memory on CUDA, the host's RAM otherwise). */
export function memoryBudgetOf(configuredMb: number | null, decision: ProviderDecision): number {
  return configuredMb ?? decision.modelMemoryMb;
}

function cudaAvailable(): boolean {
  return ort.listSupportedBackends().some((b) => b.name === "cuda" && b.bundled);
}

/**
 * The smallest graph that makes onnxruntime set up its WebGPU provider and run a kernel: y = x + x
 * for x float32[4] (opset 17, 93 bytes). Built once with scripts/onnx-writer.ts (graph
 * "webgpu_check", one Add node); carried as bytes so the agent needs no file and never imports
 * scripts/.
 */
export const WEBGPU_CHECK_MODEL = Buffer.from("CAgSEW1lc2gtd2ViZ3B1LWNoZWNrOkAKDgoBeAoBeBIBeSIDQWRkEgx3ZWJncHVfY2hlY2taDwoBeBIKCggIARIECgIIBGIPCgF5EgoKCAgBEgQKAggEQgQKABAR", "base64");

/**
 * Creates and runs a WebGPU session of WEBGPU_CHECK_MODEL in a short-lived child process: Dawn's
 * adapter and Vulkan set-up are native code that can abort the process on a broken driver, and
 * the agent must outlive that to say why. Synchronous (the agent's start waits for the answer
 * anyway); the child prints one JSON line.
 */
function webgpuAdapterWorks(timeoutMs = 60_000): WebgpuCheck {
  if (!ort.listSupportedBackends().some((b) => b.name === "webgpu" && b.bundled)) return { ok: false, error: "this onnxruntime-node build has no WebGPU provider" };
  const ortPath = createRequire(import.meta.url).resolve("onnxruntime-node");
  const script = `
const ort = require(${JSON.stringify(ortPath)});
(async () => {
  try {
    const s = await ort.InferenceSession.create(Buffer.from(${JSON.stringify(WEBGPU_CHECK_MODEL.toString("base64"))}, "base64"), { executionProviders: ["webgpu"] });
    const y = Array.from((await s.run({ x: new ort.Tensor("float32", Float32Array.from([1, 2, 3, 4]), [4]) })).y.data);
    console.log(JSON.stringify(y.join() === "2,4,6,8" ? { ok: true } : { ok: false, error: "the WebGPU check model answered " + y.join() + " for 1+1..4+4" }));
  } catch (err) {
    console.log(JSON.stringify({ ok: false, error: String(err && err.message || err) }));
  }
  process.exit(0);
})();`;
  const r = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: timeoutMs, stdio: ["ignore", "pipe", "pipe"] });
  // Dawn says on stderr what it could not load (e.g. "Couldn't load Vulkan: libvulkan.so.1"): the useful half of a refusal.
  const stderr = (r.stderr ?? "").split("\n").map((l) => l.trim()).filter(Boolean).slice(-3).join(" | ");
  let answer: WebgpuCheck | null = null;
  try {
    answer = JSON.parse(r.stdout?.trim().split("\n").at(-1) ?? "") as WebgpuCheck;
  } catch {
    answer = null;
  }
  if (answer?.ok) return answer;
  // onnxruntime's message starts with its source file and the failed condition; the reason follows.
  const why = answer ? answer.error.replace(/^[\s\S]*? was false\. /, "").trim() : `the check process failed (${r.error ? r.error.message : r.signal ? `killed by ${r.signal}` : `exit ${r.status}`})`;
  return { ok: false, error: stderr ? `${why}; stderr: ${stderr}` : why };
}

const MACHINE: ProviderProbe = { gpu: detectGpu, cudaProvider: cudaAvailable, webgpuAdapter: () => webgpuAdapterWorks(), ramMb: () => Math.round(totalmem() / 2 ** 20) };

/** What WebGPU needs on the host, for the refusal. */
const WEBGPU_NEEDS =
  "WebGPU needs a GPU driver with Vulkan (NVIDIA: the driver's Vulkan ICD, nvidia_icd.json), the Vulkan loader libvulkan.so.1 (Debian/Ubuntu: libvulkan1) " +
  "and libglvnd (libglvnd0 libegl1 libgl1 libglx0 libgles2 libopengl0); docs/deploy.md, WebGPU provider";

export function chooseProvider(choice: ProviderChoice, probe: ProviderProbe = MACHINE): ProviderDecision {
  const ramMb = probe.ramMb();
  const cpu: Accelerator = { kind: "cpu", name: "cpu", memoryMb: ramMb };
  if (choice === "cpu") return { accelerator: cpu, executionProviders: ["cpu"], name: "cpu", reason: "configured", modelMemoryMb: ramMb };
  const gpu = probe.gpu();
  if (choice === "webgpu") {
    const check = probe.webgpuAdapter();
    if (!check.ok) throw new ConfigError(`MESH_EXECUTION_PROVIDER=webgpu but no WebGPU adapter works on this machine (${check.error}). ${WEBGPU_NEEDS}`);
    // Never picked by auto: a GPU dispatch costs more than a whole small model on CPU
    // (docs/deploy.md). Operators a WebGPU kernel lacks run on the CPU provider listed after it.
    return {
      accelerator: gpu ?? { kind: "gpu", name: "WebGPU adapter", memoryMb: ramMb },
      executionProviders: ["webgpu", "cpu"],
      name: "webgpu",
      reason: gpu ? `configured; ${gpu.name} via WebGPU` : "configured; WebGPU adapter (no nvidia-smi: budgeting RAM)",
      // Without nvidia-smi the GPU's memory is unknown: RAM is the budget the host can vouch for.
      modelMemoryMb: gpu?.memoryMb ?? ramMb,
    };
  }
  if (!gpu) {
    if (choice === "cuda") throw new ConfigError("MESH_EXECUTION_PROVIDER=cuda but no NVIDIA GPU was found (nvidia-smi)");
    return { accelerator: cpu, executionProviders: ["cpu"], name: "cpu", reason: "no NVIDIA GPU found", modelMemoryMb: ramMb };
  }
  if (!probe.cudaProvider()) {
    if (choice === "cuda") {
      throw new ConfigError("MESH_EXECUTION_PROVIDER=cuda but this onnxruntime-node build has no CUDA provider (install it without onnxruntime-node-install=skip)");
    }
    // The GPU is what the machine has (reports say so), but the models run on CPU, in RAM.
    return {
      accelerator: gpu,
      executionProviders: ["cpu"],
      name: "cpu",
      reason: `${gpu.name} found, but this onnxruntime-node build has no CUDA provider`,
      modelMemoryMb: ramMb,
    };
  }
  return { accelerator: gpu, executionProviders: ["cuda", "cpu"], name: "cuda", reason: `${gpu.name}`, modelMemoryMb: gpu.memoryMb };
}
