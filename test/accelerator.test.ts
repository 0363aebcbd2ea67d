// The node's choice of onnxruntime execution provider, and the memory budget it implies, on
// machines described by fake probes (a CPU box, a GPU box with and without the CUDA provider).
// A stand-in nvidia-smi on PATH exercises the real probe's GPU path where there is no GPU; where
// the machine running the test has an NVIDIA GPU, the real probe is checked as well.

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { chooseProvider, detectGpu, memoryBudgetOf, type ProviderProbe } from "../gpu-node/accelerator.js";

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

describe("the real probe, with a stand-in nvidia-smi answering like one H200", () => {
  const cudaBundled = ort.listSupportedBackends().some((b) => b.name === "cuda" && b.bundled);
  let dir: string;
  let savedPath: string | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "accelerator-"));
    savedPath = process.env.PATH;
    const script = join(dir, "nvidia-smi");
    writeFileSync(script, '#!/bin/sh\ncase "$*" in *--query-gpu=*) echo "NVIDIA H200, 143771" ;; esac\n');
    chmodSync(script, 0o755);
    process.env.PATH = dir;
  });
  afterEach(() => {
    process.env.PATH = savedPath;
    rmSync(dir, { recursive: true, force: true });
  });

  it("finds the GPU and its memory", () => {
    expect(detectGpu()).toEqual({ kind: "gpu", name: "NVIDIA H200", memoryMb: 143771 });
  });

  it("uses CUDA only when this onnxruntime build carries it, and budgets where the models live", () => {
    const decision = chooseProvider("auto");
    expect(decision.accelerator).toEqual({ kind: "gpu", name: "NVIDIA H200", memoryMb: 143771 });
    if (cudaBundled) {
      expect(decision.executionProviders).toEqual(["cuda", "cpu"]);
      expect(memoryBudgetOf(null, decision)).toBe(143771);
    } else {
      expect(decision.executionProviders).toEqual(["cpu"]);
      expect(decision.reason).toContain("no CUDA provider");
      expect(() => chooseProvider("cuda")).toThrow(/no CUDA provider/);
      expect(memoryBudgetOf(null, decision)).toBe(Math.round(totalmem() / 2 ** 20));
    }
    expect(memoryBudgetOf(2048, decision)).toBe(2048);
  });
});
