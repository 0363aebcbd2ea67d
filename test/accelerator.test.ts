// The node's accelerator decision (gpu-node/accelerator.ts) on a GPU machine and off one, with a
// stand-in nvidia-smi on PATH so the GPU path is exercised where there is no GPU: the GPU and
// its memory are found, the provider follows what this onnxruntime-node build carries, and the
// memory budget defaults to the GPU's memory.

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { chooseProvider, detectGpu, memoryBudgetOf } from "../gpu-node/accelerator.js";

const cudaBundled = ort.listSupportedBackends().some((b) => b.name === "cuda" && b.bundled);

let dir: string;
let savedPath: string | undefined;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "accelerator-"));
  savedPath = process.env.PATH;
});
afterEach(() => {
  process.env.PATH = savedPath;
  rmSync(dir, { recursive: true, force: true });
});

/** PATH holds only a stand-in nvidia-smi that answers the GPU query like one H200. */
function fakeH200(): void {
  const script = join(dir, "nvidia-smi");
  writeFileSync(script, '#!/bin/sh\ncase "$*" in *--query-gpu=*) echo "NVIDIA H200, 143771" ;; esac\n');
  chmodSync(script, 0o755);
  process.env.PATH = dir;
}

describe("on a machine with an NVIDIA GPU", () => {
  it("finds the GPU and its memory", () => {
    fakeH200();
    expect(detectGpu()).toEqual({ kind: "gpu", name: "NVIDIA H200", memoryMb: 143771 });
  });

  it("uses CUDA only when this onnxruntime build carries it, and says why not", () => {
    fakeH200();
    const decision = chooseProvider("auto");
    expect(decision.accelerator).toEqual({ kind: "gpu", name: "NVIDIA H200", memoryMb: 143771 });
    if (cudaBundled) {
      expect(decision.executionProviders).toEqual(["cuda", "cpu"]);
    } else {
      expect(decision.executionProviders).toEqual(["cpu"]);
      expect(decision.reason).toContain("no CUDA provider");
      expect(() => chooseProvider("cuda")).toThrow(/no CUDA provider/);
    }
  });

  it("takes the GPU's memory as the budget unless MEMORY_BUDGET_MB is set", () => {
    fakeH200();
    const decision = chooseProvider("auto");
    expect(memoryBudgetOf(null, decision)).toBe(143771);
    expect(memoryBudgetOf(2048, decision)).toBe(2048);
  });
});

describe("on a machine without one", () => {
  it("runs on the CPU, and refuses an explicit cuda", () => {
    process.env.PATH = dir; // no nvidia-smi there
    expect(detectGpu()).toBeNull();
    const decision = chooseProvider("auto");
    expect(decision).toMatchObject({ executionProviders: ["cpu"], name: "cpu", reason: "no NVIDIA GPU found" });
    expect(memoryBudgetOf(null, decision)).toBe(decision.accelerator.memoryMb);
    expect(() => chooseProvider("cuda")).toThrow(/no NVIDIA GPU/);
  });
});
