// The node's disk cache of model artifacts, addressed by sha256. A download streams to a
// temporary file while hashing, reports progress, and becomes visible under its final name
// only after the hash matched, so a crash never leaves a half-written model in the cache.
//
// Each artifact lives alone in its own directory, <dir>/<sha256>/model.<ext>, and a session is
// created from that file: onnxruntime looks for external data next to the model file (it
// refuses absolute and ../ paths but reads siblings), so a model can only ever name its own
// directory's files, never another tenant's model. Partial downloads go to <dir>/.partial.

import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";

export interface FetchedArtifact {
  path: string;
  cached: boolean;
  downloadMs: number;
}

export class ModelCache {
  private readonly inflight = new Map<string, Promise<FetchedArtifact>>();

  constructor(readonly dir: string) {}

  pathFor(sha256: string, ext = "onnx"): string {
    return join(this.dir, sha256, `model.${ext}`);
  }

  /**
   * The artifact's local path, downloading it first when it is not cached. `ext` names the
   * kind of file (a model's `.onnx`, a tokenizer's `.json`); the sha256 is what identifies it.
   */
  get(
    url: string,
    sha256: string,
    size: number,
    onProgress: (bytes: number, total: number) => void,
    ext = "onnx",
  ): Promise<FetchedArtifact> {
    if (!/^[0-9a-f]{64}$/.test(sha256)) return Promise.reject(new Error("bad sha256"));
    if (!/^[a-z]{1,8}$/.test(ext)) return Promise.reject(new Error("bad file kind"));
    const id = `${sha256}.${ext}`;
    let p = this.inflight.get(id);
    if (!p) {
      p = this.fetchOnce(url, sha256, size, onProgress, ext).finally(() => this.inflight.delete(id));
      this.inflight.set(id, p);
    }
    return p;
  }

  private async fetchOnce(
    url: string,
    sha256: string,
    size: number,
    onProgress: (bytes: number, total: number) => void,
    ext: string,
  ): Promise<FetchedArtifact> {
    const path = this.pathFor(sha256, ext);
    const existing = await stat(path).catch(() => null);
    if (existing && existing.size === size) return { path, cached: true, downloadMs: 0 };

    const partial = join(this.dir, ".partial");
    await mkdir(partial, { recursive: true });
    const started = performance.now();
    const res = await fetch(url, { signal: AbortSignal.timeout(10 * 60_000) });
    if (!res.ok || !res.body) throw new Error(`artifact download failed: HTTP ${res.status}`);
    const total = Number(res.headers.get("content-length") ?? size) || size;
    const tmp = join(partial, `${sha256}.${ext}.part-${randomBytes(4).toString("hex")}`);
    const hash = createHash("sha256");
    const out = createWriteStream(tmp);
    let bytes = 0;
    let lastReport = 0;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        bytes += chunk.length;
        if (!out.write(chunk)) await new Promise<void>((r) => out.once("drain", () => r()));
        const now = performance.now();
        if (now - lastReport > 100 || bytes === total) {
          lastReport = now;
          onProgress(bytes, total);
        }
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
      const got = hash.digest("hex");
      if (got !== sha256) throw new Error(`artifact hash mismatch: expected ${sha256}, got ${got}`);
      await mkdir(dirname(path), { recursive: true });
      await rename(tmp, path);
    } catch (err) {
      out.destroy();
      await rm(tmp, { force: true });
      throw err;
    }
    return { path, cached: false, downloadMs: performance.now() - started };
  }
}
