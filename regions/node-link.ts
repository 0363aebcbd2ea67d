// The router's side of one node's WebSocket: sends framed messages, matches results to calls,
// tracks what the node holds warm and what it is loading, and fails every pending call the
// moment the socket goes away so no caller waits on a dead node.

import type { WebSocket } from "ws";
import { createCodec } from "../protocol/codec.js";
import type { ErrorCode } from "../protocol/errors.js";
import type { Accelerator, NodeToRouter, RouterToNode, WarmModel } from "../protocol/messages.js";
import type { WireTensor } from "../protocol/tensor.js";

export class NodeCallError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** True when the node is known not to have run the call (it may be retried elsewhere). */
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = "NodeCallError";
  }
}

interface PendingCall {
  resolve: (r: { outputs: WireTensor[]; inferMs: number }) => void;
  reject: (e: NodeCallError) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface PendingLoad {
  promise: Promise<{ loadMs: number }>;
  resolve: (r: { loadMs: number }) => void;
  reject: (e: NodeCallError) => void;
}

export class NodeLink {
  readonly warm = new Map<string, WarmModel>();
  private readonly loads = new Map<string, PendingLoad>();
  private readonly calls = new Map<string, PendingCall>();
  private readonly codec = createCodec();
  private nextId = 0;
  inflight = 0;
  open = true;
  /** Set when a ping went unanswered: no new work until a pong comes back. */
  unresponsive = false;

  constructor(
    readonly id: string,
    readonly ws: WebSocket,
    readonly accelerator: Accelerator,
    readonly executionProvider: string,
    readonly memoryBudgetMb: number,
    warm: WarmModel[],
  ) {
    for (const w of warm) this.warm.set(w.key, w);
  }

  get available(): boolean {
    return this.open && !this.unresponsive;
  }

  isLoading(key: string): boolean {
    return this.loads.has(key);
  }

  private send(msg: RouterToNode): void {
    this.ws.send(this.codec.encode(msg));
  }

  /** Loads a model once: concurrent callers share one load on this node. */
  load(key: string, url: string, sha256: string, size: number): Promise<{ loadMs: number }> {
    if (this.warm.has(key)) return Promise.resolve({ loadMs: 0 });
    const existing = this.loads.get(key);
    if (existing) return existing.promise;
    let resolve!: PendingLoad["resolve"];
    let reject!: PendingLoad["reject"];
    const promise = new Promise<{ loadMs: number }>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.loads.set(key, { promise, resolve, reject });
    this.send({ t: "load", key, url, sha256, size });
    return promise;
  }

  infer(key: string, inputs: WireTensor[], outputs: string[] | undefined, timeoutMs: number) {
    const id = String(++this.nextId);
    this.inflight++;
    return new Promise<{ outputs: WireTensor[]; inferMs: number }>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.calls.delete(id)) {
          this.inflight--;
          reject(new NodeCallError("deadline_exceeded", `node ${this.id} did not answer within the deadline`, false));
        }
      }, Math.max(1, timeoutMs));
      this.calls.set(id, { resolve, reject, timer });
      this.send({ t: "infer", id, key, inputs, ...(outputs ? { outputs } : {}) });
      const w = this.warm.get(key);
      if (w) w.lastUsed = Date.now();
    });
  }

  /** Applies one validated frame from the node. */
  handle(msg: NodeToRouter): void {
    switch (msg.t) {
      case "result":
      case "error": {
        const call = this.calls.get(msg.id);
        if (!call) return; // timed out already
        this.calls.delete(msg.id);
        this.inflight--;
        clearTimeout(call.timer);
        if (msg.t === "result") call.resolve({ outputs: msg.outputs, inferMs: msg.inferMs });
        else call.reject(new NodeCallError(msg.code, msg.message, false));
        return;
      }
      case "loaded": {
        this.warm.set(msg.key, { key: msg.key, memoryMb: msg.memoryMb, lastUsed: Date.now() });
        const load = this.loads.get(msg.key);
        this.loads.delete(msg.key);
        load?.resolve({ loadMs: msg.loadMs + msg.downloadMs });
        return;
      }
      case "load_failed": {
        const load = this.loads.get(msg.key);
        this.loads.delete(msg.key);
        load?.reject(new NodeCallError("node_error", `loading the model failed: ${msg.message}`, true));
        return;
      }
      case "heartbeat": {
        this.warm.clear();
        for (const w of msg.warm) this.warm.set(w.key, w);
        return;
      }
      case "load_progress":
      case "hello":
        return;
    }
  }

  /** The socket is gone: every pending call and load fails now, and may be retried elsewhere. */
  closed(reason: string): void {
    this.open = false;
    for (const [id, call] of this.calls) {
      clearTimeout(call.timer);
      call.reject(new NodeCallError("node_error", `node ${this.id} went away (${reason})`, true));
      this.calls.delete(id);
    }
    this.inflight = 0;
    for (const [key, load] of this.loads) {
      load.reject(new NodeCallError("node_error", `node ${this.id} went away while loading (${reason})`, true));
      this.loads.delete(key);
    }
  }
}
