// Traffic rules, key format, shadow comparison and node-error scrubbing: the pure parts of the
// edge's versions, splits, shadows and keys.

import { describe, expect, it } from "vitest";
import { KEY_LENGTH, keyChecksum, newApiKey, plausibleKey } from "../edge/key-format.js";
import { publicMessage } from "../edge/node-errors.js";
import { compareGenerations, compareOutputs, deterministicSampling, shadowRequestId } from "../edge/shadow.js";
import { bucketOf, pickShadows, pickSplit, ruleVersions, stickyKey, TrafficRuleSchema } from "../edge/traffic.js";

describe("traffic rule validation", () => {
  it("accepts a split that sums to 100 and shadows", () => {
    const r = TrafficRuleSchema.safeParse({ split: [{ version: 1, weight: 90 }, { version: 2, weight: 10 }], shadow: [{ version: 3, percent: 5 }] });
    expect(r.success).toBe(true);
    expect(ruleVersions(r.data!)).toEqual([1, 2, 3]);
  });

  it.each([
    [{ split: [{ version: 1, weight: 90 }, { version: 2, weight: 20 }] }, "sum to 100"],
    [{ split: [{ version: 1, weight: 50 }, { version: 1, weight: 50 }] }, "twice"],
    [{}, "split"],
    [{ split: [] }, ""],
    [{ split: [{ version: 1, weight: 100.5 }] }, ""],
    [{ split: [{ version: 0, weight: 100 }] }, ""],
    [{ shadow: [{ version: 2, percent: 101 }] }, ""],
    [{ split: [{ version: 1, weight: 100 }], extra: 1 }, ""],
  ])("refuses %j", (rule, fragment) => {
    const r = TrafficRuleSchema.safeParse(rule);
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error!.issues)).toContain(fragment);
  });
});

describe("split", () => {
  const split = [
    { version: 1, weight: 90 },
    { version: 2, weight: 10 },
  ];

  it("lands 90/10 over random calls", () => {
    let v2 = 0;
    for (let i = 0; i < 20_000; i++) if (pickSplit(split, bucketOf("mdl", null)) === 2) v2++;
    expect(Math.abs(v2 / 20_000 - 0.1)).toBeLessThan(0.01);
  });

  it("lands 90/10 over sticky keys too, and each key keeps its version", () => {
    let v2 = 0;
    for (let i = 0; i < 20_000; i++) {
      const v = pickSplit(split, bucketOf("mdl_x", `caller-${i}`));
      if (v === 2) v2++;
      expect(pickSplit(split, bucketOf("mdl_x", `caller-${i}`))).toBe(v);
    }
    expect(Math.abs(v2 / 20_000 - 0.1)).toBeLessThan(0.01);
  });

  it("a zero weight never serves; the edges of the range are covered", () => {
    const s = [
      { version: 1, weight: 0 },
      { version: 2, weight: 100 },
    ];
    for (const p of [0, 0.0001, 50, 99.9999, 100]) expect(pickSplit(s, p)).toBe(2);
  });

  it("sticky key: the header first, else the OIP id, bounded", () => {
    expect(stickyKey("abc", "id-1")).toBe("abc");
    expect(stickyKey(undefined, "id-1")).toBe("id-1");
    expect(stickyKey("  ", 5)).toBeNull();
    expect(stickyKey("x".repeat(1000), null)!.length).toBe(256);
  });
});

describe("shadows", () => {
  it("copies about the given share, never to the serving version", () => {
    const rule = { shadow: [{ version: 2, percent: 25 }, { version: 1, percent: 100 }] };
    let copies = 0;
    for (let i = 0; i < 10_000; i++) {
      const s = pickShadows(rule, 1);
      expect(s).not.toContain(1);
      copies += s.length;
    }
    expect(Math.abs(copies / 10_000 - 0.25)).toBeLessThan(0.02);
    expect(pickShadows(null, 1)).toEqual([]);
  });

  it("compares outputs within a tolerance and says why they differ", () => {
    const a = [{ name: "y", datatype: "FP32" as const, shape: [1, 2], data: [1, 2] }];
    expect(compareOutputs(a, [{ ...a[0]!, data: [1, 2.00001] }]).matched).toBe(true);
    const diff = compareOutputs(a, [{ ...a[0]!, data: [1, 3] }]);
    expect(diff).toMatchObject({ matched: false, maxAbsDiff: 1 });
    expect(compareOutputs(a, [{ ...a[0]!, shape: [2, 1] }]).reason).toContain("shape");
    expect(compareOutputs(a, []).matched).toBe(false);
  });

  it("a shadow's request id is never the served one's, and stays within 64 characters", () => {
    expect(shadowRequestId("req-1", 2)).toBe("req-1.shadow-v2");
    const long = "r".repeat(64);
    const id = shadowRequestId(long, 12);
    expect(id).toHaveLength(64);
    expect(id).not.toBe(long);
    expect(id.endsWith(".shadow-v12")).toBe(true);
  });

  it("compares generations' texts only under greedy sampling or a seed, and only when both ran to their end", () => {
    const params = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, maxTokens: 8, stop: [] };
    const done = (text: string) => ({ ended: "done" as const, text, tokens: text.length });
    expect(deterministicSampling(params)).toBe(true);
    expect(deterministicSampling({ ...params, temperature: 0.8, seed: 3 })).toBe(true);
    expect(deterministicSampling({ ...params, temperature: 0.8 })).toBe(false);
    expect(compareGenerations(done("abc"), done("abc"), params)).toMatchObject({ matched: true });
    expect(compareGenerations(done("abc"), done("abd"), params)).toMatchObject({ matched: false, reason: expect.stringContaining("character 2") });
    // Sampled without a seed: two draws differ by design, nothing to judge.
    expect(compareGenerations(done("abc"), done("xyz"), { ...params, temperature: 0.8 })).toBeNull();
    expect(compareGenerations({ ...done("ab"), ended: "cancelled" }, done("abc"), params)).toBeNull();
    expect(compareGenerations(done("abc"), { ...done(""), ended: "error" }, params)).toBeNull();
  });
});

describe("API key format", () => {
  it("new keys carry a checksum; a changed character is refused without a lookup", async () => {
    const { key, hash, start } = await newApiKey();
    expect(key).toMatch(/^mesh_[0-9A-Za-z]+$/);
    expect(key.length).toBe(KEY_LENGTH);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(key.startsWith(start)).toBe(true);
    expect(await plausibleKey(key)).toBe(true);
    const i = 10;
    const bad = key.slice(0, i) + (key[i] === "a" ? "b" : "a") + key.slice(i + 1);
    expect(await plausibleKey(bad)).toBe(false);
  });

  it("refuses junk, and the dropped pre-checksum form (37 characters) too", async () => {
    expect(await plausibleKey("mesh_" + "x".repeat(32))).toBe(false); // legacy form: no lookup any more
    expect(await plausibleKey("not-a-key")).toBe(false);
    expect(await plausibleKey("mesh_" + "x".repeat(100))).toBe(false);
    expect(await plausibleKey("mesh_" + "x".repeat(32) + "ab cd!")).toBe(false);
    expect(keyChecksum("a")).toHaveLength(6);
  });

  it("keys are distinct and their characters uniform enough", async () => {
    const keys = await Promise.all(Array.from({ length: 500 }, () => newApiKey()));
    expect(new Set(keys.map((k) => k.key)).size).toBe(500);
    const counts = new Map<string, number>();
    for (const { key } of keys) for (const ch of key.slice(5, 37)) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect(counts.size).toBe(62);
    for (const n of counts.values()) expect(n).toBeGreaterThan(150); // 16000 / 62 = 258 expected
  });
});

describe("node errors as callers see them", () => {
  it("keeps what the caller can act on and drops source paths and C++ signatures", () => {
    const raw =
      "Non-zero status code returned while running Reshape node. Name:'' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:91 onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) input_shape_size == requested_shape_size was false. The input tensor cannot be reshaped to the requested shape. Input shape:{1,4}, requested shape:{5}";
    const m = publicMessage(raw);
    expect(m).toContain("Reshape node");
    expect(m).toContain("cannot be reshaped");
    expect(m).not.toMatch(/onnxruntime_src|\.h:\d+|::/);
  });
});
