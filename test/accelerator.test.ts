// The node's choice of onnxruntime execution provider, and the memory budget it implies, on
// machines described by fake probes (a CPU box, a GPU box with and without the CUDA provider, with
// and without a working WebGPU adapter).
// A stand-in nvidia-smi on PATH exercises the real probe's GPU path where there is no GPU; where
// the machine running the test has an NVIDIA GPU, the real probe is checked as well.

import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { chooseProvider, detectGpu, memoryBudgetOf, WEBGPU_CHECK_MODEL, type ProviderProbe, type WebgpuCheck } from "../gpu-node/accelerator.js";
import { ConfigError } from "../gpu-node/config.js";

const H200 = { kind: "gpu" as const, name: "NVIDIA H200", memoryMb: 143_771 };
const NO_ADAPTER: WebgpuCheck = { ok: false, error: "Failed to get a WebGPU adapter: No supported adapters" };
const probe = (gpu: typeof H200 | null, cuda: boolean, ramMb = 65_536, webgpu: WebgpuCheck = NO_ADAPTER): ProviderProbe => ({
  gpu: () => gpu,
  cudaProvider: () => cuda,
  webgpuAdapter: () => webgpu,
  ramMb: () => ramMb,
});

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
    const d = chooseProvider("cpu", { gpu: () => ((looked = true), H200), cudaProvider: () => true, webgpuAdapter: () => ((looked = true), { ok: true }), ramMb: () => 1024 });
    expect(looked).toBe(false);
    expect(d).toMatchObject({ name: "cpu", modelMemoryMb: 1024, reason: "configured" });
  });

  it("uses WebGPU when configured and an adapter works, budgeting the GPU's memory nvidia-smi reports", () => {
    const d = chooseProvider("webgpu", probe(H200, false, 32_768, { ok: true }));
    expect(d).toMatchObject({ name: "webgpu", executionProviders: ["webgpu", "cpu"], accelerator: H200, modelMemoryMb: 143_771 });
    expect(memoryBudgetOf(null, d)).toBe(143_771);
  });

  it("with a WebGPU adapter but no nvidia-smi, budgets RAM (the GPU's size is unknown)", () => {
    const d = chooseProvider("webgpu", probe(null, false, 32_768, { ok: true }));
    expect(d).toMatchObject({ name: "webgpu", executionProviders: ["webgpu", "cpu"], modelMemoryMb: 32_768, accelerator: { kind: "gpu" } });
  });

  it("refuses webgpu where no adapter works, naming what the host lacks", () => {
    for (const gpu of [H200, null]) {
      const refuse = () => chooseProvider("webgpu", probe(gpu, true));
      expect(refuse).toThrow(ConfigError);
      expect(refuse).toThrow(/MESH_EXECUTION_PROVIDER=webgpu but no WebGPU adapter works on this machine \(Failed to get a WebGPU adapter: No supported adapters\)/);
      expect(refuse).toThrow(/GPU driver with Vulkan.*libvulkan1.*libglvnd/);
    }
  });

  it("auto never picks WebGPU, nor spends a check on it (small models run slower there)", () => {
    let checked = false;
    const p = { ...probe(H200, false, 32_768, { ok: true }), webgpuAdapter: (): WebgpuCheck => ((checked = true), { ok: true }) };
    expect(chooseProvider("auto", p).name).toBe("cpu");
    expect(chooseProvider("auto", { ...p, cudaProvider: () => true }).name).toBe("cuda");
    expect(chooseProvider("auto", { ...p, gpu: () => null }).name).toBe("cpu");
    expect(checked).toBe(false);
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

describe("the real WebGPU check", () => {
  it("carries a check model that computes x + x", async () => {
    const s = await ort.InferenceSession.create(WEBGPU_CHECK_MODEL, { executionProviders: ["cpu"] });
    const out = await s.run({ x: new ort.Tensor("float32", Float32Array.from([1, 2, 3, 4]), [4]) });
    expect(Array.from(out.y!.data as Float32Array)).toEqual([2, 4, 6, 8]);
  });

  it("answers for this machine: a webgpu decision where an adapter runs the check, else the refusal", () => {
    let decision;
    try {
      decision = chooseProvider("webgpu");
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(/no WebGPU adapter works on this machine \(.+\).*libvulkan1/);
      return;
    }
    expect(decision.name).toBe("webgpu");
    expect(decision.executionProviders).toEqual(["webgpu", "cpu"]);
  }, 90_000);

  it("a node agent with MESH_EXECUTION_PROVIDER=webgpu and no adapter exits 2 at start, before any connection (skipped where one works)", (ctx) => {
    let works = true;
    try {
      chooseProvider("webgpu");
    } catch {
      works = false;
    }
    if (works) return ctx.skip();
    // Nothing listens on port 1: an agent that got past the provider would keep retrying, not exit.
    const r = spawnSync(process.execPath, ["--import", "tsx", resolve("gpu-node/main.ts")], {
      env: { ...process.env, ROUTER_URL: "ws://127.0.0.1:1/v1/nodes", NODE_TOKEN: "accelerator-test-token-0123456789", MESH_EXECUTION_PROVIDER: "webgpu" },
      timeout: 60_000,
      encoding: "utf8",
    });
    expect(r.status).toBe(2);
  }, 90_000);
});
