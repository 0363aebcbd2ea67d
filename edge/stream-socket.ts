// One caller's generation WebSocket once the route has accepted its handshake (key, framing):
// its requests by id, each run as a Generation on the caller's pool of region sockets, and the
// bounds that keep one socket from costing more than it pays for.
//
// Back-pressure: workerd's server socket has no bufferedAmount, so the edge cannot see a slow
// reader from the socket. Instead each request has a window (default 256 tokens): the edge lets
// the node produce at most that many tokens beyond what the caller has acknowledged
// (`{"type":"ack","id":..,"tokens":n}`, cumulative). A caller that never acks gets its first
// `window` tokens and then the stream waits (and is cancelled after the region's stall timeout);
// a caller with max_tokens <= window never needs to ack.
//
// Every socket is bounded (stream-limits.ts): sockets per key and per account, requests running
// per account (SSE and generate calls included), and every client message counts. A message's
// size is checked before it is parsed (a generate at most MAX_GENERATE_BODY, an ack or cancel at
// most 1 KiB); each message counts against the key's rate limit, except an ack that grants
// credit for tokens delivered and a cancel of a running request (both bounded by what a charged
// generate produced, and refusing them would only stall a stream the caller paid for). Refusals
// are strikes, and a socket that keeps sending bad messages after being told is closed with 1008.
//
// Framing: one event per message, as the public protocol says (docs/streaming.md). A caller that
// opens the socket with `?batch=true` gets every message as an array of events instead: what
// became ready in one turn (a region message holds a decode step's token for each of the
// socket's streams), in order, at most MAX_EVENTS_PER_MESSAGE (turn-coalescer.ts).

import { createCodec } from "../protocol/codec.js";
import { MeshError } from "../protocol/errors.js";
import { GENERATE_LIMITS } from "../protocol/messages.js";
import type { KeyRecord } from "./api-keys.js";
import { services, type AppContext } from "./context.js";
import { Generation } from "./generation-runner.js";
import { generationPlan, generationTarget, shadowsOf } from "./generations.js";
import { callerLocation } from "./geo.js";
import { log } from "./log.js";
import { authorize, chargeQuota } from "./middleware.js";
import { sharedStoreFor } from "./redis.js";
import { ChannelPool } from "./stream-client.js";
import { messageSize, SOCKET_LEASE_MS, SocketLease, sockets, STREAM_LIMITS, Strikes } from "./stream-limits.js";
import { DEFAULT_WS_WINDOW, ID_RE, MAX_GENERATE_BODY, parseGenerateInput, type GenerateInput, type StreamEvent } from "./stream-protocol.js";
import { TurnCoalescer } from "./turn-coalescer.js";

/** Requests one WebSocket may have running at once. */
export const MAX_STREAMS_PER_SOCKET = 64;
/** A batched socket's most events per message (a token event is ~100 bytes of JSON). */
export const MAX_EVENTS_PER_MESSAGE = 256;

/** What the route accepted: the caller's key (checked, and its token to check again per request), the model and the framing. */
export interface SocketHandshake {
  key: KeyRecord;
  token: string;
  model: string;
  ref: string | undefined;
  framing: "json" | "msgpack";
  /** `?batch=true`: every message an array of the events ready in one turn. */
  batch: boolean;
  /** The subprotocol the server answers with (never the key's), when the caller offered any. */
  protocol: string | null;
}

/**
 * Opens the socket of an accepted handshake: refused (4xx, before upgrading) for a model that
 * cannot generate now or past the key's or account's socket caps; else the 101 to answer with.
 */
export async function openStreamSocket(c: AppContext, h: SocketHandshake): Promise<Response> {
  await generationTarget(services(c), h.key, h.model, h.ref);
  // The socket caps: this isolate's count, then every isolate's (leases in Redis), then this
  // isolate's again (others may have opened while Redis answered); register at once after it.
  sockets.checkOpen(h.key.id, h.key.accountId);
  const lease = new SocketLease(sharedStoreFor(c.get("config")), h.key.id, h.key.accountId);
  await lease.acquire();
  try {
    sockets.checkOpen(h.key.id, h.key.accountId);
  } catch (err) {
    void lease.release();
    throw err;
  }
  const pair = new WebSocketPair();
  const client = pair[0];
  const server = pair[1];
  server.accept();
  // Binary (msgpack) messages as ArrayBuffers, not the standard's default Blobs.
  server.binaryType = "arraybuffer";
  new CallerSocket(c, server, h.framing, h.batch, h.token, h.model, h.ref, h.key, lease);
  return new Response(null, { status: 101, webSocket: client, headers: h.protocol ? { "sec-websocket-protocol": h.protocol } : {} });
}

interface Running {
  /** Null while the key, model and quota are being checked. */
  gen: Generation | null;
  /** A cancel came (one that came before the generation started is answered once it would start). */
  cancelled: boolean;
  /** Tokens sent to the caller, and acknowledged by it (cumulative). */
  sent: number;
  acked: number;
}

/** Requests that ended lately, kept so their late acks are recognised (and not charged). */
const RECENT_ENDED = 64;

/** One caller's socket: its requests by id, and its sockets to regions. */
class CallerSocket {
  private readonly running = new Map<string, Running>();
  private readonly recent = new Map<string, Running>();
  private readonly strikes = new Strikes();
  readonly keyId: string;
  readonly accountId: string;
  private readonly renewal: ReturnType<typeof setInterval>;
  private readonly pool: ChannelPool;
  private readonly codec = createCodec();
  private seq = 0;
  private open = true;
  /** Set when the caller asked for batches: the turn's events, sent as one array. */
  private readonly batched: TurnCoalescer<StreamEvent> | null;

  constructor(
    private readonly c: AppContext,
    private readonly ws: WebSocket,
    private readonly framing: "json" | "msgpack",
    batch: boolean,
    private readonly token: string,
    private readonly model: string,
    private readonly ref: string | undefined,
    key: KeyRecord,
    private readonly lease: SocketLease,
  ) {
    this.keyId = key.id;
    this.accountId = key.accountId;
    this.batched = batch ? new TurnCoalescer((events) => this.write(events), MAX_EVENTS_PER_MESSAGE) : null;
    sockets.opened(this);
    this.renewal = setInterval(() => void lease.renew(), SOCKET_LEASE_MS / 2);
    this.pool = new ChannelPool(c.get("config"), callerLocation(c.req.raw, c.get("config").localMode).colo);
    ws.addEventListener("message", (e: MessageEvent) => this.onMessage(e.data));
    ws.addEventListener("close", () => this.onClose());
    ws.addEventListener("error", () => this.onClose());
  }

  private send(ev: StreamEvent): void {
    if (!this.open) return;
    if (this.batched) this.batched.push(ev, 1);
    else this.write(ev);
  }

  /** One message: an event, or (batched) the events of a turn. */
  private write(message: StreamEvent | StreamEvent[]): void {
    try {
      if (this.framing === "msgpack") this.ws.send(this.codec.encode(message));
      else this.ws.send(JSON.stringify(message));
    } catch {
      this.onClose();
    }
  }

  /** Requests running (or being checked) here: the account's cap counts them. */
  get streams(): number {
    return this.running.size;
  }

  /** A refused message: answered, and a strike; past the strikes the socket is closed instead. */
  private refuse(id: string | null, err: unknown): void {
    if (!this.open) return;
    if (this.strikes.strike()) {
      log("warn", this.c.get("requestId"), "closing a stream socket that kept sending bad messages", { code: err instanceof MeshError ? err.code : "internal_error" });
      this.closeWith(1008, "too many bad messages");
      return;
    }
    this.error(id, err);
  }

  /**
   * Counts a message that acts on no paid request against the key's rate limit; `refusal` is
   * its answer when the limit allows it (a message past the limit is answered rate_limited).
   */
  private charge(id: string | null, refusal?: MeshError): void {
    authorize(this.c, this.token, "infer").then(
      () => {
        if (refusal) this.refuse(id, refusal);
      },
      (err: unknown) => {
        if (err instanceof MeshError && (err.code === "unauthorized" || err.code === "forbidden")) {
          this.error(id, err);
          this.closeWith(1008, "API key revoked");
        } else {
          this.refuse(id, err);
        }
      },
    );
  }

  private error(id: string | null, err: unknown): void {
    const e = err instanceof MeshError ? err : new MeshError("internal_error", "internal error");
    if (!(err instanceof MeshError)) log("error", this.c.get("requestId"), "stream request failed", { error: String(err) });
    this.send({ type: "error", id, error: e.message, code: e.code, requestId: this.c.get("requestId") });
  }

  private onMessage(data: unknown): void {
    if (!this.open) return;
    // Sized before parsing: nothing this big is parsed at all.
    const size = messageSize(data);
    if (size > MAX_GENERATE_BODY) {
      this.charge(null, new MeshError("payload_too_large", `a message is larger than ${MAX_GENERATE_BODY} bytes`));
      return;
    }
    let msg: unknown;
    try {
      msg = typeof data === "string" ? JSON.parse(data) : this.codec.decode(new Uint8Array(data as ArrayBuffer));
    } catch {
      this.charge(null, new MeshError("invalid_json", "a message is not valid JSON (text frames) or msgpack (binary frames)"));
      return;
    }
    const m = (typeof msg === "object" && msg !== null ? msg : {}) as Record<string, unknown>;
    const id = typeof m.id === "string" && ID_RE.test(m.id) ? m.id : null;
    if (m.type === "generate") {
      void this.generate(m, id).catch((err: unknown) => this.refuse(id, err));
      return;
    }
    if (size > STREAM_LIMITS.controlMessageBytes) {
      this.charge(id, new MeshError("payload_too_large", `a control message (ack, cancel) is larger than ${STREAM_LIMITS.controlMessageBytes} bytes`));
      return;
    }
    const r = id ? this.running.get(id) : undefined;
    if (m.type === "ack") {
      const n = m.tokens;
      const acked = id ? (r ?? this.recent.get(id)) : undefined;
      const upTo = acked && typeof n === "number" && Number.isSafeInteger(n) && n >= 0 ? Math.min(n, acked.sent) : -1;
      // Free: it acknowledges tokens delivered and not yet acknowledged (late ones included).
      if (acked && upTo > acked.acked) {
        if (acked.gen && r === acked) acked.gen.credit(upTo - acked.acked);
        acked.acked = upTo;
        return;
      }
      this.charge(id);
      return;
    }
    if (m.type === "cancel") {
      // Free once per running request; a repeat, or a cancel of nothing running, counts.
      if (!r || r.cancelled) return this.charge(id);
      r.cancelled = true;
      r.gen?.cancel();
      return;
    }
    this.charge(id, new MeshError("bad_request", "'type' must be generate, ack or cancel"));
  }

  /** A request left `running`: its late acks stay recognisable for a while. */
  private ended(id: string, r: Running): void {
    if (this.running.get(id) === r) this.running.delete(id);
    this.recent.delete(id);
    this.recent.set(id, r);
    if (this.recent.size > RECENT_ENDED) this.recent.delete(this.recent.keys().next().value!);
  }

  private async generate(m: Record<string, unknown>, id: string | null): Promise<void> {
    if (!id) throw new MeshError("bad_request", "a generate message needs an 'id' (1-128 characters of letters, digits, '.', '_', ':' or '-')");
    if (this.running.has(id)) {
      // Not deleted by the catch above (its placeholder check): the running one keeps its id.
      throw new MeshError("bad_request", `request '${id}' is still running on this socket`);
    }
    if (this.running.size >= MAX_STREAMS_PER_SOCKET) {
      throw new MeshError("rate_limited", `at most ${MAX_STREAMS_PER_SOCKET} requests may run on one socket`, { "retry-after": "1" });
    }
    sockets.checkStream(this.accountId);
    const window = m.window === undefined ? DEFAULT_WS_WINDOW : m.window;
    if (typeof window !== "number" || !Number.isSafeInteger(window) || window < 1 || window > GENERATE_LIMITS.maxWindow) {
      throw new MeshError("bad_request", `'window' must be an integer from 1 to ${GENERATE_LIMITS.maxWindow}`);
    }
    const input = parseGenerateInput({ text_input: m.text_input, parameters: m.parameters, id });
    // A placeholder holds the id while the key, model and quota are checked.
    const slot: Running = { gen: null, cancelled: false, sent: 0, acked: 0 };
    this.running.set(id, slot);
    // The key is checked again for every request, and each request counts against its rate
    // limit: a long-lived socket neither outlives a revocation nor escapes the limit.
    let key: KeyRecord;
    try {
      ({ key } = await authorize(this.c, this.token, "infer"));
    } catch (err) {
      this.running.delete(id);
      const e = err instanceof MeshError ? err : new MeshError("internal_error", "internal error");
      if (e.code === "unauthorized" || e.code === "forbidden") {
        this.error(id, e);
        this.closeWith(1008, "API key revoked");
        return;
      }
      throw e;
    }
    try {
      await this.run(id, slot, key, input, window);
    } catch (err) {
      // Its placeholder goes (a running request of the same id is another slot and stays).
      if (this.running.get(id) === slot) this.running.delete(id);
      throw err;
    }
  }

  /** The rest of a generate once its key checked: model, quota, then the region. */
  private async run(id: string, slot: Running, key: KeyRecord, input: GenerateInput, window: number): Promise<void> {
    const t = await generationTarget(services(this.c), key, this.model, this.ref);
    if (!this.open) return;
    if (slot.cancelled) {
      this.running.delete(id);
      this.send({
        type: "done",
        id,
        model_name: t.model.name,
        model_version: String(t.version.version),
        finish_reason: "cancelled",
        prompt_tokens: 0,
        tokens: 0,
        region: null,
        node: null,
        timing: { queue_ms: 0, load_ms: 0, ttft_ms: 0, gen_ms: 0, total_ms: 0 },
      });
      return;
    }
    await chargeQuota(this.c);
    const requestId = `${this.c.get("requestId")}.${++this.seq}`.slice(0, 64);
    const plan = generationPlan(this.c, t, input, { requestId, id, window, pool: this.pool });
    // A WebSocket request is plain text (no chat): a shadow sends the same.
    const shadows = shadowsOf(plan, () => input);
    const gen = new Generation(plan, (ev) => {
      shadows?.(ev);
      if (ev.type === "token") slot.sent++;
      if (ev.type === "done" || ev.type === "error") this.ended(id, slot);
      this.send(ev);
    });
    slot.gen = gen;
    // No region took it: the shadow copies still run (they hear its error), the caller is refused.
    await gen.start(shadows);
  }

  private onClose(): void {
    this.closeWith(1000, "closed");
  }

  private closeWith(code: number, reason: string): void {
    if (!this.open) return;
    this.open = false;
    // What the turn gathered (an error before a 1008, say) goes before the close.
    this.batched?.flush();
    sockets.closed(this);
    clearInterval(this.renewal);
    void this.lease.release();
    for (const r of this.running.values()) r.gen?.cancel();
    this.running.clear();
    this.recent.clear();
    // Closing the region sockets cancels whatever is still running there.
    this.pool.closeAll();
    try {
      this.ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }
}
