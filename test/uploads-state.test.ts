// The multipart upload state (edge/uploads.ts) with an in-memory R2 bucket: what the e2e test
// cannot wait for or time precisely. An upload past its expiry is gone (404), its parts and its
// R2 multipart upload with it, and stops counting against the account; two completes at once:
// one proceeds, the other is 409; a part sent while a complete holds the upload is 409; the
// part size grows so a 50 GiB file fits R2's 10,000 parts.

import { afterEach, describe, expect, it, vi } from "vitest";

// Imported by path at run time: the Worker's files are type-checked against workers-types
// (edge/tsconfig.json), which this Node project does not load.
const path = "../edge/uploads.js";
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const U: any = await import(path);

interface Stored {
  body: Uint8Array;
  etag: string;
  customMetadata?: Record<string, string>;
}

/** Enough of R2Bucket for the upload state: objects with etags and conditional puts, lists, multipart. */
class FakeBucket {
  objects = new Map<string, Stored>();
  multipart = new Map<string, { key: string; parts: Map<number, Uint8Array>; state: "open" | "completed" | "aborted" }>();
  private seq = 0;

  private async bytes(value: unknown): Promise<Uint8Array> {
    if (typeof value === "string") return new TextEncoder().encode(value);
    if (value instanceof Uint8Array) return value;
    if (value instanceof ArrayBuffer) return new Uint8Array(value);
    return new Uint8Array(await new Response(value as ReadableStream).arrayBuffer());
  }
  async get(key: string) {
    const o = this.objects.get(key);
    if (!o) return null;
    return { etag: o.etag, size: o.body.length, json: async () => JSON.parse(new TextDecoder().decode(o.body)), body: new Response(o.body as Uint8Array<ArrayBuffer>).body };
  }
  async head(key: string) {
    const o = this.objects.get(key);
    return o ? { etag: o.etag, size: o.body.length } : null;
  }
  async put(key: string, value: unknown, opts: { onlyIf?: { etagMatches?: string }; customMetadata?: Record<string, string> } = {}) {
    const body = await this.bytes(value);
    // Check and write with no await between them, as R2 applies a conditional put atomically.
    const cur = this.objects.get(key);
    if (opts.onlyIf?.etagMatches !== undefined && cur?.etag !== opts.onlyIf.etagMatches) return null;
    const stored = { body, etag: `e${++this.seq}`, customMetadata: opts.customMetadata };
    this.objects.set(key, stored);
    return { etag: stored.etag };
  }
  async delete(keys: string | string[]) {
    for (const k of Array.isArray(keys) ? keys : [keys]) this.objects.delete(k);
  }
  async list(o: { prefix?: string; delimiter?: string }) {
    const keys = [...this.objects.keys()].filter((k) => k.startsWith(o.prefix ?? "")).sort();
    const prefixes = new Set<string>();
    const objects: Array<{ key: string; customMetadata?: Record<string, string> }> = [];
    for (const k of keys) {
      const rest = k.slice((o.prefix ?? "").length);
      const cut = o.delimiter ? rest.indexOf(o.delimiter) : -1;
      if (cut >= 0) prefixes.add((o.prefix ?? "") + rest.slice(0, cut + 1));
      else objects.push({ key: k, customMetadata: this.objects.get(k)!.customMetadata });
    }
    return { objects, delimitedPrefixes: [...prefixes], truncated: false };
  }
  async createMultipartUpload(key: string) {
    const uploadId = `mp${++this.seq}`;
    this.multipart.set(uploadId, { key, parts: new Map(), state: "open" });
    return { uploadId };
  }
  resumeMultipartUpload(key: string, uploadId: string) {
    const m = this.multipart.get(uploadId)!;
    return {
      uploadPart: async (n: number, value: unknown) => {
        if (m.state !== "open") throw new Error("multipart upload is not open");
        m.parts.set(n, await this.bytes(value));
        return { partNumber: n, etag: `p${n}-${++this.seq}` };
      },
      abort: async () => {
        if (m.state !== "open") throw new Error("multipart upload is not open");
        m.state = "aborted";
      },
      complete: async () => {
        m.state = "completed";
        return { key };
      },
    };
  }
}

const owner = { accountId: "acc_a", modelId: "mdl_1", model: "m" };
const limits = { maxUploadBytes: 500 * 1024 ** 3, maxOpenUploads: 2 };

afterEach(() => {
  vi.useRealTimers();
});

describe("multipart upload state", () => {
  it("an upload past its expiry is gone: 404, its parts and R2 multipart upload removed, no longer counted", async () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ["Date"] });
    const bucket = new FakeBucket();
    const a = await U.createUpload(bucket, limits, owner, { size: 12 * 1024 * 1024, partSize: 5 * 1024 * 1024 });
    await U.createUpload(bucket, limits, owner, { size: 10 });
    await expect(U.createUpload(bucket, limits, owner, { size: 10 })).rejects.toMatchObject({ code: "conflict" });
    const found = await U.requireUpload(bucket, owner.accountId, owner.modelId, a.id);
    await U.putPart(bucket, found.record, 1, new Uint8Array(5 * 1024 * 1024));
    expect([...bucket.objects.keys()].filter((k) => k.includes(a.id)).length).toBe(2); // record and one part

    vi.setSystemTime(1_000_000 + U.UPLOAD_TTL_MS + 1);
    await expect(U.requireUpload(bucket, owner.accountId, owner.modelId, a.id)).rejects.toMatchObject({ code: "not_found" });
    expect([...bucket.objects.keys()].filter((k) => k.includes(a.id))).toEqual([]);
    expect(bucket.multipart.get(a.r2UploadId)!.state).toBe("aborted");
    // The other one expired too; the account may open two again.
    await U.createUpload(bucket, limits, owner, { size: 10 });
    await U.createUpload(bucket, limits, owner, { size: 10 });
  });

  it("another account's or another model's upload id names nothing", async () => {
    const bucket = new FakeBucket();
    const a = await U.createUpload(bucket, limits, owner, { size: 10 });
    await expect(U.requireUpload(bucket, "acc_b", owner.modelId, a.id)).rejects.toMatchObject({ code: "not_found" });
    await expect(U.requireUpload(bucket, owner.accountId, "mdl_2", a.id)).rejects.toMatchObject({ code: "not_found" });
    await expect(U.requireUpload(bucket, owner.accountId, owner.modelId, "../acc_b/x")).rejects.toMatchObject({ code: "not_found" });
    expect(await U.listUploads(bucket, "acc_b")).toEqual([]);
  });

  it("two completes at once: one holds the upload, the other is 409, and so is a part sent meanwhile", async () => {
    const bucket = new FakeBucket();
    const a = await U.createUpload(bucket, limits, owner, { size: 10 });
    const found = await U.requireUpload(bucket, owner.accountId, owner.modelId, a.id);
    // Both read the record before either claims it; the part is missing, so the winner stops at
    // "lacks part 1" (400) after its claim, and gives the claim back.
    const [first, second] = await Promise.allSettled([U.completeUpload(bucket, found, (s: string) => `artifacts/${s}`), U.completeUpload(bucket, found, (s: string) => `artifacts/${s}`)]);
    const codes = [first, second].map((r) => (r.status === "rejected" ? (r.reason as { code: string }).code : "ok")).sort();
    expect(codes).toEqual(["bad_request", "conflict"]);
    // Given back: a later complete claims it again (and stops at the same missing part).
    const again = await U.requireUpload(bucket, owner.accountId, owner.modelId, a.id);
    expect(again.record.completingUntil).toBe(0);
    // While a complete holds it, parts are refused.
    await bucket.put(`uploads/${owner.accountId}/${a.id}/upload.json`, JSON.stringify({ ...again.record, completingUntil: Date.now() + 60_000 }));
    const held = await U.requireUpload(bucket, owner.accountId, owner.modelId, a.id);
    await expect(U.putPart(bucket, held.record, 1, new Uint8Array(10))).rejects.toMatchObject({ code: "conflict" });
    await expect(U.completeUpload(bucket, held, (s: string) => `artifacts/${s}`)).rejects.toMatchObject({ code: "conflict" });
  });

  it("sizes parts so a file fits R2's 10,000 parts, and bounds the file", async () => {
    const bucket = new FakeBucket();
    const big = await U.createUpload(bucket, { ...limits, maxOpenUploads: 10 }, owner, { size: 50 * 1024 ** 3 });
    expect(big.parts).toBeLessThanOrEqual(10_000);
    expect(big.partSize).toBe(16 * 1024 * 1024);
    const huge = await U.createUpload(bucket, { ...limits, maxOpenUploads: 10 }, owner, { size: 400 * 1024 ** 3 });
    expect(huge.parts).toBeLessThanOrEqual(10_000);
    expect(huge.partSize).toBeLessThanOrEqual(64 * 1024 * 1024);
    expect(U.partLength(big, big.parts) + (big.parts - 1) * big.partSize).toBe(50 * 1024 ** 3);
    await expect(U.createUpload(bucket, limits, owner, { size: limits.maxUploadBytes + 1 })).rejects.toMatchObject({ code: "payload_too_large" });
    await expect(U.createUpload(bucket, { ...limits, maxUploadBytes: 2000 * 1024 ** 3 }, owner, { size: 1000 * 1024 ** 3 })).rejects.toMatchObject({ code: "bad_request" });
  });
});
