// What this node runs on, and the one place that decides onnxruntime's execution provider:
// CUDA when the machine has an NVIDIA GPU and this onnxruntime build carries the CUDA provider,
// CPU otherwise. It always says which, and why, so nobody guesses from latency.

import { execFile, execFileSync } from "node:child_process";
import { totalmem } from "node:os";
import * as ort from "onnxruntime-node";
import type { Accelerator } from "../protocol/messages.js";
import type { ProviderChoice } from "./config.js";

export interface ProviderDecision {
  accelerator: Accelerator;
  executionProviders: string[];
  /** Short name for reports: "cuda" or "cpu". */
  name: string;
  reason: string;
  /**
   * Memory the models will live in, MiB: the GPU's on CUDA, the machine's RAM on CPU (also on a
   * GPU machine whose onnxruntime build has no CUDA provider: the GPU's size is no budget there).
   */
  modelMemoryMb: number;
}

/** What chooseProvider looks at; tests pass their own. */
export interface ProviderProbe {
  gpu(): Accelerator | null;
  cudaProvider(): boolean;
  ramMb(): number;
}

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

const MACHINE: ProviderProbe = { gpu: detectGpu, cudaProvider: cudaAvailable, ramMb: () => Math.round(totalmem() / 2 ** 20) };

export function chooseProvider(choice: ProviderChoice, probe: ProviderProbe = MACHINE): ProviderDecision {
  const ramMb = probe.ramMb();
  const cpu: Accelerator = { kind: "cpu", name: "cpu", memoryMb: ramMb };
  if (choice === "cpu") return { accelerator: cpu, executionProviders: ["cpu"], name: "cpu", reason: "configured", modelMemoryMb: ramMb };
  const gpu = probe.gpu();
  if (!gpu) {
    if (choice === "cuda") throw new Error("MESH_EXECUTION_PROVIDER=cuda but no NVIDIA GPU was found (nvidia-smi)");
    return { accelerator: cpu, executionProviders: ["cpu"], name: "cpu", reason: "no NVIDIA GPU found", modelMemoryMb: ramMb };
  }
  if (!probe.cudaProvider()) {
    if (choice === "cuda") {
      throw new Error("MESH_EXECUTION_PROVIDER=cuda but this onnxruntime-node build has no CUDA provider (install it without onnxruntime-node-install=skip)");
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
