// The node's disk cache of model artifacts, addressed by sha256. A download streams to a
// temporary file while hashing, reports progress, and becomes visible under its final name
// only after the hash matched, so a crash never leaves a half-written model in the cache.
//
// Each artifact lives alone in its own directory, <dir>/<sha256>/model.<ext>, and a session is
// created from that file: onnxruntime looks for external data next to the model file (it
// refuses absolute and ../ paths but reads siblings), so a model can only ever name its own
// directory's files, never another tenant's model. Partial downloads go to <dir>/.partial.
//
// Downloads are bounded and resumable: a server that sends more bytes than the router named is
// cut off before the extra bytes reach the disk; a download cut midway resumes from the bytes
// already written with a Range request (a bounded number of tries without progress, with
// back-off), continuing the same running hash, since what is on disk is exactly what was hashed.
//
// The cache holds at most a byte budget, counted per version directory (so a bundle's files
// count together). Before a download starts, its size is reserved and the least recently used
// versions are removed to make room; never a version whose session is loaded (`inUse`), nor one
// held by a download or load in progress (`acquire` ... `release`). Versions found on disk at
// start are indexed, their files' newest mtime standing for their last use; a use touches it.
// The filesystem's free space counts too: a download that would not fit on the disk, even after
// evicting, is refused before it starts; and the node reports both (diskUsage) in its heartbeat
// so the router places a load only where it fits.
//
// A bundle (a graph plus its external-data files) is one version directory: each data file is
// downloaded like the graph (running hash, size bound, resume) and renamed in under its bundle
// name next to model.onnx, so onnxruntime finds its external data there and nowhere else. The
// directory is named by versionKey: the graph's sha256 alone for a single file, a hash of the
// graph's and every file's name and sha256 for a bundle, so the same graph with other weights
// never shares a directory (or a session) with it.

import { createHash, randomBytes, type Hash } from "node:crypto";
import { mkdir, open, readdir, rename, rm, stat, statfs, utimes, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { BUNDLE_FILE_NAME_RE, type DiskUsage } from "../protocol/messages.js";
import { formatBytes } from "../protocol/region-report.js";

/** A bundle's data file as the cache fetches it (BundleFileRef). */
export interface BundleFile {
  name: string;
  sha256: string;
  size: number;
  url: string;
}

/** The version directory's name: the graph's sha256, or for a bundle a hash over the graph and its files. */
export function versionKey(sha256: string, files: readonly Pick<BundleFile, "name" | "sha256">[] = []): string {
  if (files.length === 0) return sha256;
  const h = createHash("sha256").update(`bundle\n${sha256}\n`);
  for (const f of [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) h.update(`${f.name}\n${f.sha256}\n`);
  return h.digest("hex");
}

export interface FetchedArtifact {
  path: string;
  cached: boolean;
  downloadMs: number;
}

/** An artifact the cache will not evict until `release()` (idempotent) is called. */
export interface HeldArtifact extends FetchedArtifact {
  release(): void;
}

export interface ModelCacheOptions {
  /** Bytes the cache may hold on disk; null or absent: what is cached at start plus 80% of the disk's free space then. */
  budgetBytes?: number | null;
  /** True while a version's session is loaded (by sha256): such a version is never evicted. */
  inUse?: (sha256: string) => boolean;
  /** Tries after a failure that brought no new bytes (a failure after progress starts the count again). */
  retries?: number;
  /** Back-off before the n-th retry: base * 2^n, capped, with jitter. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** A download that receives nothing for this long is cut, and resumed like any other cut. */
  idleTimeoutMs?: number;
  /** The clock that orders last uses (tests pass their own). */
  now?: () => number;
}

export interface CacheStats {
  budgetBytes: number;
  /** Bytes of complete versions plus bytes reserved by downloads in progress. */
  usedBytes: number;
  versions: number;
  /** Where the budget came from: MODEL_CACHE_BYTES, or the disk's free space at start. */
  budgetSource: "configured" | "free space";
}

interface Entry {
  bytes: number;
  lastUsed: number;
}

/** A failure the next try may not meet: a cut connection, a 5xx, a stall, a short body. */
class Retryable extends Error {}

const SHA = /^[0-9a-f]{64}$/;
/** Connection errors that say nothing is there to download from (see attempt()). */
const NOWHERE = new Set(["ECONNREFUSED", "ENOTFOUND", "ERR_INVALID_URL"]);
/** Partial files untouched this long belong to a download that died with its process. */
const STALE_PARTIAL_MS = 60 * 60_000;

export { formatBytes };

export class ModelCache {
  private readonly inflight = new Map<string, Promise<FetchedArtifact>>();
  private readonly entries = new Map<string, Entry>();
  /** Holds by sha256: downloads and loads in progress, and callers that have not released. */
  private readonly holds = new Map<string, number>();
  /** Directories being removed by eviction: a new download of the same sha waits for it. */
  private readonly removing = new Map<string, Promise<void>>();
  private reservedBytes = 0;
  private budget = 0;
  private budgetSource: CacheStats["budgetSource"] = "configured";
  private readonly retries: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly idleTimeoutMs: number;
  private readonly inUse: (sha256: string) => boolean;
  private readonly now: () => number;
  /** Settles once the files on disk are indexed and the budget is known. */
  readonly ready: Promise<CacheStats>;

  constructor(
    readonly dir: string,
    opts: ModelCacheOptions = {},
  ) {
    this.retries = opts.retries ?? 5;
    this.retryBaseMs = opts.retryBaseMs ?? 200;
    this.retryMaxMs = opts.retryMaxMs ?? 5_000;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
    this.inUse = opts.inUse ?? (() => false);
    this.now = opts.now ?? Date.now;
    this.ready = this.index(opts.budgetBytes ?? null);
    // Callers see the failure through `ready` or their first get(); never as an unhandled rejection.
    this.ready.catch(() => undefined);
  }

  pathFor(sha256: string, ext = "onnx"): string {
    return join(this.dir, sha256, `model.${ext}`);
  }

  stats(): CacheStats {
    return { budgetBytes: this.budget, usedBytes: this.usedBytes(), versions: this.entries.size, budgetSource: this.budgetSource };
  }

  /**
   * What the node's heartbeat reports of the disk: the cache's budget, use and the part of it
   * that cannot be evicted now, and the filesystem's free space (statfs), so the router places
   * a load only where its files fit.
   */
  async diskUsage(): Promise<DiskUsage> {
    const freeBytes = await this.freeDiskBytes();
    let pinned = this.reservedBytes;
    for (const [sha, e] of this.entries) if (!this.evictable(sha)) pinned += e.bytes;
    return { cacheBudgetBytes: this.budget, cacheUsedBytes: this.usedBytes(), cachePinnedBytes: pinned, freeBytes };
  }

  /**
   * The artifact's local path, downloading it first when it is not cached. `ext` names the
   * kind of file (a model's `.onnx`, a tokenizer's `.json`); the sha256 is what identifies it.
   * The file may be evicted as soon as this resolves: callers that keep using it take `acquire`.
   */
  async get(
    url: string,
    sha256: string,
    size: number,
    onProgress: (bytes: number, total: number) => void,
    ext = "onnx",
  ): Promise<FetchedArtifact> {
    const held = await this.acquire(url, sha256, size, onProgress, ext);
    held.release();
    return { path: held.path, cached: held.cached, downloadMs: held.downloadMs };
  }

  /**
   * Like `get`, and the version is not evicted until `release()`: hold it from download to the
   * end of the load. `files`: a bundle's data files, fetched into the same directory; the
   * version is then known (holds, inUse, eviction) by versionKey(sha256, files).
   */
  async acquire(
    url: string,
    graphSha256: string,
    size: number,
    onProgress: (bytes: number, total: number) => void,
    ext = "onnx",
    files: readonly BundleFile[] = [],
  ): Promise<HeldArtifact> {
    if (!SHA.test(graphSha256)) throw new Error("bad sha256");
    if (!/^[a-z]{1,8}$/.test(ext)) throw new Error("bad file kind");
    if (!Number.isSafeInteger(size) || size < 0) throw new Error("bad artifact size");
    for (const f of files) {
      // Checked where the frame is parsed too; here because this is what writes the path.
      if (!BUNDLE_FILE_NAME_RE.test(f.name) || f.name === `model.${ext}` || !SHA.test(f.sha256) || !Number.isSafeInteger(f.size) || f.size < 0) {
        throw new Error("bad bundle file");
      }
    }
    const sha256 = versionKey(graphSha256, files);
    this.holds.set(sha256, (this.holds.get(sha256) ?? 0) + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (this.holds.get(sha256) ?? 1) - 1;
      if (n > 0) this.holds.set(sha256, n);
      else this.holds.delete(sha256);
      const e = this.entries.get(sha256);
      if (e) e.lastUsed = this.now();
    };
    try {
      const id = `${sha256}.${ext}`;
      let p = this.inflight.get(id);
      if (!p) {
        const all = [...files, { name: `model.${ext}`, sha256: graphSha256, size, url }];
        p = this.fetchOnce(sha256, all, onProgress).finally(() => this.inflight.delete(id));
        this.inflight.set(id, p);
      }
      return { ...(await p), release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * Marks a version used now (its session was just unloaded: it was in use until this moment),
   * in memory and in its files' mtime, which stands for the last use after a restart.
   */
  touch(sha256: string): void {
    const e = this.entries.get(sha256);
    if (!e) return;
    e.lastUsed = this.now();
    const dir = join(this.dir, sha256);
    void readdir(dir)
      .then((names) => Promise.all(names.map((n) => utimes(join(dir, n), new Date(), new Date()))))
      .catch(() => undefined);
  }

  private usedBytes(): number {
    let n = this.reservedBytes;
    for (const e of this.entries.values()) n += e.bytes;
    return n;
  }

  private async freeDiskBytes(): Promise<number> {
    const fs = await statfs(this.dir);
    return fs.bavail * fs.bsize;
  }

  private evictable(sha256: string): boolean {
    return !this.holds.has(sha256) && !this.inUse(sha256);
  }

  /** Indexes the versions on disk, settles the budget, removes stale partials, and trims to the budget. */
  private async index(configured: number | null): Promise<CacheStats> {
    await mkdir(join(this.dir, ".partial"), { recursive: true });
    for (const d of await readdir(this.dir, { withFileTypes: true })) {
      if (!d.isDirectory()) continue;
      const path = join(this.dir, d.name);
      if (d.name === ".partial") {
        const now = Date.now();
        for (const f of await readdir(path)) {
          const s = await stat(join(path, f)).catch(() => null);
          if (s && now - s.mtimeMs > STALE_PARTIAL_MS) await rm(join(path, f), { force: true, recursive: true });
        }
        continue;
      }
      if (!SHA.test(d.name)) continue;
      const { bytes, newest } = await dirUsage(path);
      if (bytes === 0 && newest === 0) await rm(path, { recursive: true, force: true });
      else this.entries.set(d.name, { bytes, lastUsed: newest });
    }
    if (configured !== null) {
      this.budget = configured;
      this.budgetSource = "configured";
    } else {
      const fs = await statfs(this.dir);
      this.budget = this.usedBytes() + Math.floor(fs.bavail * fs.bsize * 0.8);
      this.budgetSource = "free space";
    }
    // A budget lowered since the last run: what is over it goes now, oldest first.
    await this.evictFor(0, null, false);
    return this.stats();
  }

  /**
   * Removes least recently used versions until `size` more bytes fit, and reserves them. Victims
   * are chosen and dropped from the index synchronously, so two downloads never count on the
   * same room; their directories are removed before this resolves.
   */
  private async evictFor(size: number, forSha: string | null, reserve: boolean): Promise<void> {
    if (size > this.budget) {
      throw new Error(
        `the model's file takes ${formatBytes(size)}, more than this node's whole model cache (MODEL_CACHE_BYTES, ${formatBytes(this.budget)})`,
      );
    }
    // The filesystem may have less room than the budget (other files, a budget set too high):
    // evict until the bytes fit on disk as well, or refuse now rather than fail mid-download.
    // Read before the victims are chosen, so choosing and reserving stay one synchronous step.
    const diskFree = reserve ? await this.freeDiskBytes() : Infinity;
    const now = this.now();
    const candidates: [string, Entry][] = [];
    for (const [sha, e] of this.entries) {
      if (sha === forSha) continue;
      // A loaded version is being used right now: that is its last use.
      if (!this.evictable(sha)) e.lastUsed = now;
      else candidates.push([sha, e]);
    }
    candidates.sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    let free = this.budget - this.usedBytes();
    let freed = 0;
    const victims: string[] = [];
    for (const [sha, e] of candidates) {
      if (free >= size && diskFree + freed >= size) break;
      victims.push(sha);
      free += e.bytes;
      freed += e.bytes;
    }
    if (free < size) {
      if (!reserve) return; // At start nothing is in use; a configured budget below the loaded set cannot happen.
      throw new Error(
        `this node's model cache (MODEL_CACHE_BYTES, ${formatBytes(this.budget)}) is full of models in use; ${formatBytes(size)} more do not fit`,
      );
    }
    if (diskFree + freed < size) {
      throw new Error(
        `the disk under this node's model cache has ${formatBytes(diskFree)} free and ${formatBytes(freed)} to evict; the model's ${formatBytes(size)} do not fit`,
      );
    }
    const removals: Promise<void>[] = [];
    for (const sha of victims) {
      this.entries.delete(sha);
      const p = rm(join(this.dir, sha), { recursive: true, force: true }).finally(() => this.removing.delete(sha));
      this.removing.set(sha, p);
      removals.push(p);
    }
    if (reserve) this.reservedBytes += size;
    try {
      await Promise.all(removals);
    } catch (err) {
      if (reserve) this.reservedBytes -= size;
      throw err;
    }
  }

  /**
   * Makes `key`'s directory hold every one of `files` (the graph last), downloading those not
   * there at their size; the room for all of them is reserved at once.
   */
  private async fetchOnce(key: string, files: readonly BundleFile[], onProgress: (bytes: number, total: number) => void): Promise<FetchedArtifact> {
    await this.ready;
    await this.removing.get(key);
    const dir = join(this.dir, key);
    const path = join(dir, files[files.length - 1]!.name);
    const missing: BundleFile[] = [];
    for (const f of files) {
      const existing = await stat(join(dir, f.name)).catch(() => null);
      if (existing && existing.size === f.size) continue;
      // A file of the wrong size under this name is damage, not a model: it goes.
      if (existing) await rm(join(dir, f.name), { force: true });
      missing.push(f);
    }
    if (missing.length === 0) {
      const now = this.now();
      await Promise.all(files.map((f) => utimes(join(dir, f.name), new Date(), new Date()).catch(() => undefined)));
      const e = this.entries.get(key);
      if (e) e.lastUsed = now;
      else this.entries.set(key, { bytes: (await dirUsage(dir)).bytes, lastUsed: now });
      return { path, cached: true, downloadMs: 0 };
    }

    const total = missing.reduce((n, f) => n + f.size, 0);
    // What is left of the version counts as it is on disk now; the missing files are reserved.
    const present = this.entries.get(key);
    if (present) present.bytes = (await dirUsage(dir)).bytes;
    await this.evictFor(total, key, true);
    const started = performance.now();
    try {
      let done = 0;
      for (const f of missing) {
        const tmp = join(this.dir, ".partial", `${key}.${f.name}.part-${randomBytes(4).toString("hex")}`);
        try {
          const hash = await this.download(f.url, f.size, tmp, (bytes) => onProgress(done + bytes, total));
          const got = hash.digest("hex");
          if (got !== f.sha256) throw new Error(`artifact hash mismatch: expected ${f.sha256}, got ${got}`);
          await mkdir(dir, { recursive: true });
          await rename(tmp, join(dir, f.name));
        } finally {
          await rm(tmp, { force: true });
        }
        done += f.size;
      }
      this.entries.set(key, { bytes: (await dirUsage(dir)).bytes, lastUsed: this.now() });
    } catch (err) {
      // Files that did arrive stay (a retry resumes after them) and count against the budget.
      if ((await stat(dir).catch(() => null)) !== null) this.entries.set(key, { bytes: (await dirUsage(dir)).bytes, lastUsed: this.now() });
      throw err;
    } finally {
      this.reservedBytes -= total;
    }
    return { path, cached: false, downloadMs: performance.now() - started };
  }

  /** Downloads `url` to `tmp`, resuming after cuts; the hash of exactly `size` bytes. */
  private async download(url: string, size: number, tmp: string, onProgress: (bytes: number, total: number) => void): Promise<Hash> {
    const state: DownloadState = { bytes: 0, hash: createHash("sha256") };
    const file = await open(tmp, "w");
    try {
      for (let failures = 0; ; ) {
        const before = state.bytes;
        try {
          await this.attempt(url, size, file, state, onProgress);
          return state.hash;
        } catch (err) {
          if (!(err instanceof Retryable)) throw err;
          if (state.bytes > before) failures = 0;
          if (++failures > this.retries) {
            throw new Error(`artifact download failed after ${failures} tries at ${state.bytes} of ${size} bytes: ${err.message}`);
          }
          const backoff = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** (failures - 1));
          await new Promise((r) => setTimeout(r, backoff / 2 + Math.random() * (backoff / 2)));
        }
      }
    } finally {
      await file.close();
    }
  }

  /** One request: from byte 0, or a Range request from the bytes already written. */
  private async attempt(
    url: string,
    size: number,
    file: FileHandle,
    state: DownloadState,
    onProgress: (bytes: number, total: number) => void,
  ): Promise<void> {
    const ac = new AbortController();
    let idle: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ac.abort(new Retryable(`no bytes for ${this.idleTimeoutMs} ms`)), this.idleTimeoutMs);
    };
    arm();
    try {
      let res: Response;
      try {
        res = await fetch(url, { signal: ac.signal, headers: state.bytes > 0 ? { range: `bytes=${state.bytes}-` } : {} });
      } catch (err) {
        // Nowhere to connect before a byte came (nothing listens, no such host, a port fetch
        // refuses): a wrong origin or the edge down; the load fails now (the router may place it
        // elsewhere) instead of waiting out the back-off. After bytes came, it is a cut.
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        const nowhere = NOWHERE.has(cause?.code ?? "") || cause?.message === "bad port";
        if (nowhere && state.bytes === 0) throw new Error(`artifact download failed: ${causeOf(err)}`);
        throw new Retryable(`connection failed: ${causeOf(err)}`);
      }
      if (res.status === 206 && state.bytes > 0) {
        const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers.get("content-range") ?? "");
        if (!range || Number(range[1]) !== state.bytes || Number(range[3]) !== size) {
          await res.body?.cancel();
          throw new Error(`the artifact server answered a resume from byte ${state.bytes} with range '${res.headers.get("content-range")}' of an artifact of ${size} bytes`);
        }
      } else if (res.status === 200) {
        const declared = res.headers.get("content-length");
        if (declared !== null && Number(declared) !== size) {
          await res.body?.cancel();
          throw new Error(`the artifact server sends ${declared} bytes; the router named ${size}`);
        }
        // A server that ignores Range sends everything again: start over.
        if (state.bytes > 0) {
          await file.truncate(0);
          state.bytes = 0;
          state.hash = createHash("sha256");
        }
      } else {
        await res.body?.cancel();
        if (res.status >= 500 || res.status === 429 || res.status === 408) throw new Retryable(`HTTP ${res.status}`);
        throw new Error(`artifact download failed: HTTP ${res.status}`);
      }
      if (!res.body) throw new Retryable("no body");
      // Where this try starts: a resumed download reports from the bytes it already has.
      onProgress(state.bytes, size);
      let lastReport = performance.now();
      const reader = res.body.getReader();
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          throw new Retryable(`cut at ${state.bytes} of ${size} bytes: ${causeOf(err)}`);
        }
        if (chunk.done) break;
        arm();
        const data = chunk.value;
        if (state.bytes + data.length > size) {
          ac.abort();
          await reader.cancel().catch(() => undefined);
          throw new Error(`the artifact server sent more than the ${size} bytes the router named; download stopped`);
        }
        await writeAll(file, data, state.bytes);
        state.hash.update(data);
        state.bytes += data.length;
        const now = performance.now();
        if (now - lastReport > 100 || state.bytes === size) {
          lastReport = now;
          onProgress(state.bytes, size);
        }
      }
      if (state.bytes < size) throw new Retryable(`the body ended at ${state.bytes} of ${size} bytes`);
    } finally {
      clearTimeout(idle);
    }
  }
}

interface DownloadState {
  /** Bytes written to the partial file, all of them (and only them) in `hash`. */
  bytes: number;
  hash: Hash;
}

async function writeAll(file: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await file.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** Total bytes of the files under a version's directory, and the newest file's mtime (its last use). */
async function dirUsage(dir: string): Promise<{ bytes: number; newest: number }> {
  let bytes = 0;
  let newest = 0;
  for (const d of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const path = join(dir, d.name);
    if (d.isDirectory()) {
      const sub = await dirUsage(path);
      bytes += sub.bytes;
      newest = Math.max(newest, sub.newest);
    } else if (d.isFile()) {
      const s = await stat(path).catch(() => null);
      if (!s) continue;
      bytes += s.size;
      newest = Math.max(newest, s.mtimeMs);
    }
  }
  return { bytes, newest };
}

function causeOf(err: unknown): string {
  const e = err as Error & { cause?: Error };
  return e.cause?.message ? `${e.message} (${e.cause.message})` : String(e?.message ?? err);
}
