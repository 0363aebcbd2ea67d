// The router's side of one node's WebSocket: sends framed messages, matches results to calls,
// tracks what the node holds warm and what it is loading, and fails every pending call the
// moment the socket goes away so no caller waits on a dead node.
//
// A call's slot on the node is held until the node says the call ended (its result or error
// frame; a cancel is confirmed by an error 'cancelled'), not when the router stops waiting: at
// the deadline the caller gets its 504 at once and the node is told to cancel, but the slot
// stays taken until the node confirms, so the router never sends work to a node still busy.
//
// What a call cost is the node's to say (computeMs on its result or error frame), a call stopped
// at its deadline included. So the node is told a deadline a little before the caller's (the
// reserve: a tenth of the time, at most 250 ms): it stops there and its confirmation, with the
// compute it spent, reaches the router before the caller's deadline, and the 504 carries it.
// A confirmation that does not come within the reserve leaves the router its own measure (the
// time since it sent the call), and the slot still waits for the node's word.

import type { WebSocket } from "ws";
import { createCodec } from "../protocol/codec.js";
import { FrameBatcher } from "../protocol/frame-batch.js";
import type { ErrorCode } from "../protocol/errors.js";
import type { ModelSignature } from "../formats/datatypes.js";
import type {
  Accelerator,
  BundleFileRef,
  ChatMessage,
  DiskUsage,
  GenerateParams,
  NodeToRouter,
  ProcessMemory,
  RouterToNode,
  TokenizerRef,
  WarmModel,
} from "../protocol/messages.js";
import { diskRoom, type NodeState } from "./placement.js";
import type { CarriedTensor } from "../formats/binary-tensors.js";
import { LEGACY_AGREEMENT, type WireAgreement } from "../protocol/wire-version.js";

export class NodeCallError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** True when the node is known not to have run the call (it may be retried elsewhere). */
    readonly retryable: boolean,
    /** What the call cost on the node before it failed (session time), when it ran at all. */
    readonly computeMs?: number,
  ) {
    super(message);
    this.name = "NodeCallError";
  }
}

export interface NodeCallResult {
  outputs: CarriedTensor[];
  inferMs: number;
  /** Session time the node spent on the call (absent from older nodes). */
  computeMs?: number;
  /** The node's span (W3C traceparent) when it echoed one. */
  traceparent?: string;
}

/** The most of a call's time kept back for the node's confirmation of a stop at its deadline. */
export const CONFIRM_RESERVE_MAX_MS = 250;

/** How much earlier than the caller's deadline the node is told to stop (see the header). */
export function confirmReserveMs(timeoutMs: number): number {
  return Math.min(CONFIRM_RESERVE_MAX_MS, Math.floor(Math.max(0, timeoutMs) / 10));
}

interface PendingCall {
  key: string;
  /** Called once when the node says the call ended (or its socket went): the slot is free. */
  onEnd?: () => void;
  sentAt: number;
  resolve: (r: NodeCallResult) => void;
  reject: (e: NodeCallError) => void;
  timer: ReturnType<typeof setTimeout>;
  /** Just past the node's own deadline: the cancel that makes sure it stops. */
  stopTimer: ReturnType<typeof setTimeout>;
  /** That cancel went: a 'cancelled' from the node is then the deadline's stop, not the caller's. */
  stopping: boolean;
  /** The caller was answered (deadline); the slot waits for the node's word that the call ended. */
  abandoned: boolean;
}

/** What the router's stream relay hears of one generation on this node. */
export interface NodeStreamHandlers {
  token(frame: Extract<NodeToRouter, { t: "token" }>): void;
  done(frame: Extract<NodeToRouter, { t: "done" }>): void;
  fail(err: NodeCallError): void;
}

export interface NodeStream {
  id: string;
  credit(n: number): void;
  cancel(): void;
}

interface PendingStream {
  key: string;
  handlers: NodeStreamHandlers;
}

interface PendingLoad {
  promise: Promise<{ loadMs: number }>;
  resolve: (r: { loadMs: number }) => void;
  reject: (e: NodeCallError) => void;
}

export class NodeLink implements NodeState {
  readonly warm = new Map<string, WarmModel>();
  /** Models being loaded, with the memory reserved for each. */
  readonly loading = new Map<string, number>();
  readonly modelInflight = new Map<string, number>();
  private readonly loads = new Map<string, PendingLoad>();
  /** Models we told the node to unload, until a heartbeat no longer lists them. */
  private readonly unloading = new Set<string>();
  private readonly calls = new Map<string, PendingCall>();
  private readonly streamCalls = new Map<string, PendingStream>();
  private readonly codec;
  private nextId = 0;
  inflight = 0;
  open = true;
  /** Set when a ping went unanswered: no new work until a pong comes back. */
  unresponsive = false;
  /** Set when the node said it is draining: it finishes what it has and gets nothing new. */
  draining = false;
  /** From heartbeats. */
  nodeQueued = 0;
  utilisation = 0;
  /** Generations running here, and how many the node said it runs at once (hello). */
  streams = 0;
  streamSlots = 0;
  /** From heartbeats: the node's generation counters and process memory. */
  gen: { active: number; tokens: number } | null = null;
  mem: ProcessMemory | null = null;
  /** From heartbeats: calls the node has started since it started (to count executions). */
  runs: number | null = null;
  /** Heartbeats received on this socket: a count read after N more has seen every run before. */
  heartbeats = 0;
  /** From heartbeats: conversation keys whose KV caches the node keeps, and the prefill ms each saves. */
  conversations: ReadonlyMap<string, number> = new Map();
  /** From heartbeats: the model cache's disk use and the disk's free space (null until reported). */
  disk: DiskUsage | null = null;
  /**
   * Bytes of loads sent to the node, kept until the first disk reading after the load ended:
   * counted on top of the reading, since the node may not count them in it yet. Conservative: a
   * download's reservation in the reading is counted twice meanwhile, which matters only on a
   * nearly full disk (a load there waits for the next heartbeat, never overfills it).
   */
  private readonly loadBytesSinceDisk = new Map<string, number>();
  /** Download progress of a model load (the scheduler passes it to streams waiting for it). */
  onLoadProgress: (key: string, bytes: number, total: number) => void = () => undefined;

  constructor(
    readonly id: string,
    readonly ws: WebSocket,
    readonly accelerator: Accelerator,
    readonly executionProvider: string,
    readonly memoryBudgetMb: number,
    readonly slots: number,
    readonly maxModels: number,
    warm: WarmModel[],
    readonly framing: "msgpack" | "json",
    /** Called when capacity frees up (a call ended, a model loaded): the scheduler re-pumps. */
    private readonly onChange: () => void,
    /** What the node's hello and the router agreed on (protocol/wire-version.ts); default: a node from before versions. */
    readonly wire: WireAgreement = LEGACY_AGREEMENT,
  ) {
    this.codec = createCodec(framing);
    this.out = new FrameBatcher<RouterToNode>(this.codec.encode, (bytes) => {
      if (this.open) this.ws.send(bytes, { binary: this.framing === "msgpack" });
    });
    // Only a node that announced `batch` reads one.
    this.out.batching = wire.features.has("batch");
    for (const w of warm) this.warm.set(w.key, w);
  }

  /** The node's model cache budget (placement.ts); undefined: not reported. */
  get diskBudgetBytes(): number | undefined {
    return this.disk?.cacheBudgetBytes;
  }

  /** Bytes of new model files this node can take on disk now (placement.ts); undefined: not reported. */
  get diskRoomBytes(): number | undefined {
    if (!this.disk) return undefined;
    let pending = 0;
    for (const b of this.loadBytesSinceDisk.values()) pending += b;
    return Math.max(0, diskRoom(this.disk) - pending);
  }

  get available(): boolean {
    return this.open && !this.unresponsive && !this.draining;
  }

  /**
   * Frames to the node, coalesced per turn of the event loop (protocol/frame-batch.ts): the
   * credit grants for a node's streams come in bursts, one per token its reader took.
   */
  private readonly out: FrameBatcher<RouterToNode>;

  private send(msg: RouterToNode): void {
    // The hot frames wait for the turn's end; the rest go at once, behind them: a call's tensors
    // (never encoded twice by a batch over its bound), and cancels a deadline's timer sends.
    if (msg.t === "credit" || msg.t === "generate") this.out.push(msg);
    else this.out.sendNow(msg);
  }

  /** Loads a model once: concurrent callers share one load on this node. */
  load(
    key: string,
    url: string,
    sha256: string,
    size: number,
    signature: ModelSignature,
    reserveMb: number,
    tokenizer?: TokenizerRef,
    files?: BundleFileRef[],
  ): Promise<{ loadMs: number }> {
    if (this.warm.has(key)) return Promise.resolve({ loadMs: 0 });
    const existing = this.loads.get(key);
    if (existing) return existing.promise;
    this.unloading.delete(key); // from here on `loading` keeps stale heartbeats out
    let resolve!: PendingLoad["resolve"];
    let reject!: PendingLoad["reject"];
    const promise = new Promise<{ loadMs: number }>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.loads.set(key, { promise, resolve, reject });
    this.loading.set(key, reserveMb);
    this.loadBytesSinceDisk.set(key, size + (files ?? []).reduce((n, f) => n + f.size, 0));
    this.send({ t: "load", key, url, sha256, size, signature, ...(tokenizer ? { tokenizer } : {}), ...(files?.length ? { files } : {}) });
    return promise;
  }

  /** Frees a model now; the caller has checked that no call of it is in flight here. */
  unload(key: string): void {
    this.warm.delete(key);
    this.unloading.add(key);
    this.send({ t: "unload", key });
  }

  /** Asks the node to stop a call; its slot frees when the node confirms (error 'cancelled'). */
  cancel(id: string): void {
    if (this.calls.has(id) && this.open) this.send({ t: "cancel", id });
  }

  /**
   * Starts a generation here with `credit` tokens granted. The stream counts against the
   * node's stream slots and keeps its model from eviction until it ends (done, error, or the
   * socket going away); the handlers hear each of those exactly once.
   */
  generate(
    key: string,
    /** `chat`, when given, replaces the prompt (the node renders the bundle's chat template). */
    input: { prompt: string; chat?: ChatMessage[] | undefined; account?: string },
    params: GenerateParams,
    /** Absent: the node uses the tokenizer in the loaded version's bundle. */
    tokenizer: TokenizerRef | undefined,
    credit: number,
    handlers: NodeStreamHandlers,
    /** The model's bytes as the edge named them: the node refuses to run other bytes. */
    sha256: string,
    /** For the node's logs: the request id and the router's span (W3C traceparent). */
    trace: { requestId?: string; traceparent?: string } = {},
  ): NodeStream {
    const id = String(++this.nextId);
    this.streams++;
    this.countModel(key, 1);
    this.streamCalls.set(id, { key, handlers });
    this.sendWork(trace, {
      t: "generate",
      id,
      key,
      sha256,
      prompt: input.prompt,
      ...(input.chat ? { chat: input.chat } : {}),
      // Whose kept KV caches the generation may reuse (and under whom its own is kept).
      ...(input.account ? { account: input.account } : {}),
      params,
      ...(tokenizer ? { tokenizer } : {}),
      credit,
    });
    return {
      id,
      credit: (n) => {
        if (n > 0 && this.streamCalls.has(id) && this.open) this.send({ t: "credit", id, n });
      },
      // The node answers a cancel with `done` (reason cancelled); the slot frees then.
      cancel: () => {
        if (this.streamCalls.has(id) && this.open) this.send({ t: "cancel", id });
      },
    };
  }

  private streamEnded(id: string): PendingStream | undefined {
    const s = this.streamCalls.get(id);
    if (!s) return undefined;
    this.streamCalls.delete(id);
    this.streams--;
    this.countModel(s.key, -1);
    return s;
  }

  private callEnded(key: string): void {
    this.inflight--;
    this.countModel(key, -1);
  }

  /** Calls and streams running on the node, per model (a model with any is never evicted). */
  private countModel(key: string, delta: 1 | -1): void {
    const n = (this.modelInflight.get(key) ?? 0) + delta;
    if (n <= 0) this.modelInflight.delete(key);
    else this.modelInflight.set(key, n);
  }

  /** Sends a call or a generation, with its trace for the node's logs; its model counts as used now. */
  private sendWork(trace: { requestId?: string | undefined; traceparent?: string | undefined }, frame: Extract<RouterToNode, { t: "infer" | "generate" }>): void {
    this.send({
      ...frame,
      ...(trace.requestId ? { requestId: trace.requestId } : {}),
      ...(trace.traceparent ? { traceparent: trace.traceparent } : {}),
    });
    const w = this.warm.get(frame.key);
    if (w) w.lastUsed = Date.now();
  }

  /**
   * Runs a call on the node. `call.sha256` is the model's bytes as the edge named them (the
   * node refuses other bytes); the node is told an absolute deadline, the reserve before the
   * caller's, and stops there itself. `call.onEnd` hears when the slot frees (the node's word).
   */
  infer(
    key: string,
    inputs: CarriedTensor[],
    outputs: string[] | undefined,
    timeoutMs: number,
    call: { sha256: string; requestId?: string; traceparent?: string; onEnd?: () => void },
  ): Promise<NodeCallResult> {
    const id = String(++this.nextId);
    this.inflight++;
    this.countModel(key, 1);
    const budget = Math.max(1, timeoutMs);
    const nodeBudget = Math.max(1, budget - confirmReserveMs(budget));
    const sentAt = performance.now();
    const deadline = Date.now() + nodeBudget;
    return new Promise<NodeCallResult>((resolve, reject) => {
      // The node stops itself at its deadline; the cancel, half the reserve later, makes sure
      // (a clock that differs, a node that missed it).
      const stopTimer = setTimeout(
        () => {
          const pending = this.calls.get(id);
          if (!pending || !this.open) return;
          pending.stopping = true;
          this.send({ t: "cancel", id });
        },
        nodeBudget + Math.floor((budget - nodeBudget) / 2),
      );
      const timer = setTimeout(() => {
        const pending = this.calls.get(id);
        if (!pending || pending.abandoned) return;
        // The node did not confirm within the reserve: the caller hears now, billed the time the
        // call has held the node; the slot stays taken until the node confirms the end.
        pending.abandoned = true;
        reject(new NodeCallError("deadline_exceeded", `node ${this.id} did not answer within the deadline`, false, performance.now() - sentAt));
      }, budget);
      this.calls.set(id, { key, resolve, reject, timer, stopTimer, stopping: false, abandoned: false, sentAt, ...(call.onEnd ? { onEnd: call.onEnd } : {}) });
      this.sendWork(call, { t: "infer", id, key, sha256: call.sha256, inputs, ...(outputs ? { outputs } : {}), deadline });
    });
  }

  /** Applies one validated frame from the node. */
  handle(msg: NodeToRouter): void {
    switch (msg.t) {
      case "token": {
        this.streamCalls.get(msg.id)?.handlers.token(msg);
        return;
      }
      case "done": {
        const s = this.streamEnded(msg.id);
        s?.handlers.done(msg);
        if (s) this.onChange();
        return;
      }
      case "error":
        if (this.streamCalls.has(msg.id)) {
          const s = this.streamEnded(msg.id)!;
          // As for calls: a node that did not hold the model (node_error) did not run anything.
          s.handlers.fail(new NodeCallError(msg.code, msg.message, msg.code === "node_error"));
          this.onChange();
          return;
        }
      // falls through: an error of a call
      case "result": {
        const call = this.calls.get(msg.id);
        if (!call) return;
        this.calls.delete(msg.id);
        this.callEnded(call.key);
        clearTimeout(call.timer);
        clearTimeout(call.stopTimer);
        // The slot is free before the caller hears: whoever counts it frees it first.
        call.onEnd?.();
        // A call whose caller was answered at the deadline: this frame only frees the slot.
        if (!call.abandoned) {
          if (msg.t === "result") call.resolve({ outputs: msg.outputs, inferMs: msg.inferMs, ...(msg.computeMs !== undefined ? { computeMs: msg.computeMs } : {}), ...(msg.traceparent ? { traceparent: msg.traceparent } : {}) });
          // A node that says it does not hold the model did not run the call.
          // A cancel the router sent at the deadline is the deadline's stop to the caller.
          else if (msg.code === "cancelled" && call.stopping) call.reject(new NodeCallError("deadline_exceeded", "the call ran past its deadline and was stopped", false, msg.computeMs));
          else call.reject(new NodeCallError(msg.code, msg.message, msg.code === "node_error", msg.computeMs));
        }
        this.onChange();
        return;
      }
      case "loaded": {
        this.warm.set(msg.key, { key: msg.key, memoryMb: msg.memoryMb, lastUsed: Date.now() });
        this.loading.delete(msg.key);
        const load = this.loads.get(msg.key);
        this.loads.delete(msg.key);
        // The load's owner (the scheduler) re-pumps from its handler, after crediting the load
        // time to the calls that waited for it; pumping here first would dispatch those calls
        // before that, and they would report loadMs 0.
        if (load) load.resolve({ loadMs: msg.loadMs + msg.downloadMs });
        else this.onChange();
        return;
      }
      case "load_failed": {
        this.loading.delete(msg.key);
        const load = this.loads.get(msg.key);
        this.loads.delete(msg.key);
        // As for "loaded": the owner fails or re-pumps the waiting calls from its handler.
        if (load) load.reject(new NodeCallError("node_error", `loading the model failed: ${msg.message}`, false));
        else this.onChange();
        return;
      }
      case "heartbeat": {
        // The node is the truth about what it holds; keep our lastUsed when it is newer.
        // A heartbeat sent before the node handled an unload still lists that model: skip it
        // until one comes without it, or a call would be sent to a node that no longer has it.
        const before = new Map(this.warm);
        this.warm.clear();
        for (const key of this.unloading) if (!msg.warm.some((w) => w.key === key)) this.unloading.delete(key);
        for (const w of msg.warm) {
          if (this.loading.has(w.key) || this.unloading.has(w.key)) continue;
          this.warm.set(w.key, { ...w, lastUsed: Math.max(w.lastUsed, before.get(w.key)?.lastUsed ?? 0) });
        }
        this.nodeQueued = msg.queued;
        this.utilisation = msg.utilisation;
        if (msg.gen) this.gen = msg.gen;
        if (msg.mem) this.mem = msg.mem;
        if (msg.runs !== undefined) this.runs = msg.runs;
        if (msg.affinity) this.conversations = new Map(msg.affinity.map((c) => [c.key, c.savedMs]));
        if (msg.disk) {
          this.disk = msg.disk;
          // A load that ended before this reading is in it (its files on disk, pinned while loaded).
          const pending = this.loadBytesSinceDisk.size;
          for (const key of [...this.loadBytesSinceDisk.keys()]) if (!this.loads.has(key)) this.loadBytesSinceDisk.delete(key);
          // Room came back (a finished load no longer counted twice): a load placement passed over may fit now.
          if (this.loadBytesSinceDisk.size < pending) this.onChange();
        }
        this.heartbeats++;
        return;
      }
      case "draining":
        this.draining = true;
        // Frames are ordered: once the node reads this, no call sent before it is still on the wire.
        this.send({ t: "drain_ack" });
        return;
      case "load_progress":
        this.onLoadProgress(msg.key, msg.bytes, msg.total);
        return;
      case "hello":
        return;
    }
  }

  /**
   * The socket is gone: every pending call and load fails now, and may be retried elsewhere.
   * Returns how many calls were still pending: 0 after a graceful drain.
   */
  closed(reason: string): number {
    this.open = false;
    const pending = this.calls.size;
    for (const [id, call] of this.calls) {
      clearTimeout(call.timer);
      clearTimeout(call.stopTimer);
      call.onEnd?.();
      // The node may have started it: not retryable, so it is never run a second time elsewhere.
      if (!call.abandoned) call.reject(new NodeCallError("node_error", `node ${this.id} went away during the call (${reason})`, false));
      this.calls.delete(id);
    }
    for (const [id, s] of this.streamCalls) {
      this.streamCalls.delete(id);
      s.handlers.fail(new NodeCallError("node_error", `node ${this.id} went away (${reason})`, true));
    }
    this.streams = 0;
    this.inflight = 0;
    this.modelInflight.clear();
    this.loading.clear();
    for (const [key, load] of this.loads) {
      load.reject(new NodeCallError("node_error", `node ${this.id} went away while loading (${reason})`, true));
      this.loads.delete(key);
    }
    return pending;
  }
}
