// The node's choice of onnxruntime execution provider, and the memory budget it implies, on
// machines described by fake probes (a CPU box, a GPU box with and without the CUDA provider).
// Where the machine running the test has an NVIDIA GPU, the real probe is checked as well.

import { totalmem } from "node:os";
import { describe, expect, it } from "vitest";
import { chooseProvider, detectGpu, type ProviderProbe } from "../gpu-node/accelerator.js";

const H200 = { kind: "gpu" as const, name: "NVIDIA H200", memoryMb: 143_771 };
const probe = (gpu: typeof H200 | null, cuda: boolean, ramMb = 65_536): ProviderProbe => ({ gpu: () => gpu, cudaProvider: () => cuda, ramMb: () => ramMb });

describe("chooseProvider", () => {
  it("runs on CPU, in RAM, where there is no GPU; cuda then refuses to start", () => {
    const d = chooseProvider("auto", probe(null, false));
    expect(d).toMatchObject({ name: "cpu", executionProviders: ["cpu"], modelMemoryMb: 65_536, accelerator: { kind: "cpu" } });
    expect(() => chooseProvider("cuda", probe(null, false))).toThrow(/no NVIDIA GPU/);
  });

  it("uses CUDA and budgets the GPU's memory where the provider is there", () => {
    const d = chooseProvider("auto", probe(H200, true));
    expect(d).toMatchObject({ name: "cuda", executionProviders: ["cuda", "cpu"], modelMemoryMb: 143_771, accelerator: H200 });
    expect(chooseProvider("cuda", probe(H200, true)).name).toBe("cuda");
  });

  it("on a GPU host without the CUDA provider, runs on CPU and budgets RAM, not the GPU's memory", () => {
    const d = chooseProvider("auto", probe(H200, false, 32_768));
    expect(d.name).toBe("cpu");
    expect(d.executionProviders).toEqual(["cpu"]);
    // Models live in RAM here: a 141 GiB budget on a 32 GiB host would load models until the OOM killer came.
    expect(d.modelMemoryMb).toBe(32_768);
    expect(d.reason).toMatch(/NVIDIA H200 found, but this onnxruntime-node build has no CUDA provider/);
    expect(() => chooseProvider("cuda", probe(H200, false))).toThrow(/no CUDA provider/);
  });

  it("configured cpu never looks for a GPU", () => {
    let looked = false;
    const d = chooseProvider("cpu", { gpu: () => ((looked = true), H200), cudaProvider: () => true, ramMb: () => 1024 });
    expect(looked).toBe(false);
    expect(d).toMatchObject({ name: "cpu", modelMemoryMb: 1024, reason: "configured" });
  });

  it("reads a real GPU where nvidia-smi finds one (skipped elsewhere)", (ctx) => {
    const gpu = detectGpu();
    if (!gpu) return ctx.skip();
    expect(gpu.kind).toBe("gpu");
    expect(gpu.memoryMb).toBeGreaterThan(0);
    const d = chooseProvider("auto");
    expect(d.accelerator).toEqual(gpu);
    expect(d.modelMemoryMb).toBe(d.name === "cuda" ? gpu.memoryMb : Math.round(totalmem() / 2 ** 20));
  });
});
