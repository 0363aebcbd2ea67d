// Minimal RESP2 client over node:net, written for the local Upstash REST stand-in
// (local/upstash-rest-server.ts) so that it needs no Redis client dependency.
//
// - RespParser: incremental parser for +, -, :, $, * that accepts arbitrary chunk boundaries.
//   Bulk strings stay Buffers (binary safe); simple strings become JS strings, so callers can
//   tell a status reply ("OK") from a bulk string that happens to read "OK".
// - RespConnection: one socket, many commands in flight; replies are matched to requests in
//   FIFO order, which is what Redis guarantees per connection. Redis error replies resolve as
//   RespError values (they are data, not failures, so a pipeline keeps per-command errors);
//   only transport failures reject, and they reject every pending command.
// - RespPool: a few shared connections for plain commands, plus exclusive connections lent out
//   for work that owns a connection's state for a while (MULTI/EXEC, blocking commands,
//   pub/sub), so that such work never interleaves with other requests on a shared socket.
import net from "node:net";

/** A Redis error reply ("-ERR ..."), carried as a value rather than thrown. */
export class RespError {
  constructor(readonly message: string) {}

  /** First word of the message, e.g. "ERR", "WRONGTYPE", "EXECABORT". */
  get code(): string {
    const space = this.message.indexOf(" ");
    return space < 0 ? this.message : this.message.slice(0, space);
  }

  toString(): string {
    return this.message;
  }
}

/**
 * A decoded RESP2 reply: simple string -> string, error -> RespError, integer -> number
 * (beyond 2^53 precision is lost, as in JSON), bulk string -> Buffer, array -> array,
 * null bulk string / null array -> null.
 */
export type RespValue = string | number | Buffer | null | RespError | RespValue[];

export type RespArg = string | Buffer | number;

/** The stream is not valid RESP2; the connection cannot be resynchronised and is dropped. */
export class RespProtocolError extends Error {
  override name = "RespProtocolError";
}

const CRLF = Buffer.from("\r\n");
const EMPTY = Buffer.alloc(0);

/** Encodes one command as a RESP array of bulk strings (the only form Redis accepts from clients). */
export function encodeCommand(args: readonly RespArg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg), "utf8");
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF);
  }
  return Buffer.concat(parts);
}

interface ArrayFrame {
  items: RespValue[];
  remaining: number;
}

interface BulkFrame {
  length: number;
  chunks: Buffer[];
  have: number;
}

/**
 * Incremental RESP2 parser. Feed it socket chunks with push(); every complete top-level value
 * is handed to onValue in order. The state (open arrays, a bulk string being collected) lives
 * in the parser, so nothing is re-parsed when a value spans many chunks, and a large bulk
 * string is assembled with a single copy instead of growing a buffer chunk by chunk.
 */
export class RespParser {
  private buf: Buffer = EMPTY;
  private pos = 0;
  private readonly stack: ArrayFrame[] = [];
  private bulk: BulkFrame | null = null;

  constructor(private readonly onValue: (value: RespValue) => void) {}

  /** Throws RespProtocolError on malformed input; the parser is unusable afterwards. */
  push(chunk: Buffer): void {
    if (this.pos >= this.buf.length) {
      this.buf = chunk;
    } else {
      // Only a partial header line can be left over here (bulk payloads go to this.bulk),
      // so this copy stays small.
      this.buf = Buffer.concat([this.buf.subarray(this.pos), chunk]);
    }
    this.pos = 0;
    this.drain();
  }

  private drain(): void {
    for (;;) {
      let value: RespValue;
      if (this.bulk !== null) {
        const bulk = this.bulk;
        const need = bulk.length + 2 - bulk.have;
        const available = this.buf.length - this.pos;
        if (available < need) {
          if (available > 0) bulk.chunks.push(this.buf.subarray(this.pos));
          bulk.have += available;
          this.buf = EMPTY;
          this.pos = 0;
          return;
        }
        bulk.chunks.push(this.buf.subarray(this.pos, this.pos + need));
        this.pos += need;
        const whole = Buffer.concat(bulk.chunks, bulk.length + 2);
        if (whole[bulk.length] !== 0x0d || whole[bulk.length + 1] !== 0x0a) {
          throw new RespProtocolError("bulk string not terminated by CRLF");
        }
        this.bulk = null;
        value = whole.subarray(0, bulk.length);
      } else {
        const lineEnd = this.buf.indexOf(CRLF, this.pos);
        if (lineEnd < 0) {
          if (this.buf.length - this.pos > 64 * 1024 * 1024) {
            throw new RespProtocolError("header line too long");
          }
          return;
        }
        const type = this.buf[this.pos];
        const start = this.pos + 1;
        this.pos = lineEnd + 2;
        switch (type) {
          case 0x2b: // '+'
            value = this.buf.toString("utf8", start, lineEnd);
            break;
          case 0x2d: // '-'
            value = new RespError(this.buf.toString("utf8", start, lineEnd));
            break;
          case 0x3a: // ':'
            value = parseInteger(this.buf.toString("latin1", start, lineEnd));
            break;
          case 0x24: {
            // '$'
            const length = parseInteger(this.buf.toString("latin1", start, lineEnd));
            if (length === -1) {
              value = null;
              break;
            }
            if (length < 0) throw new RespProtocolError(`invalid bulk length ${length}`);
            if (this.buf.length - this.pos >= length + 2) {
              const end = this.pos + length;
              if (this.buf[end] !== 0x0d || this.buf[end + 1] !== 0x0a) {
                throw new RespProtocolError("bulk string not terminated by CRLF");
              }
              // Copy: the socket chunk may be large and shared by many small values; a
              // subarray would keep all of it alive for as long as any one value is held.
              value = Buffer.from(this.buf.subarray(this.pos, end));
              this.pos = end + 2;
              break;
            }
            this.bulk = { length, chunks: [], have: 0 };
            continue;
          }
          case 0x2a: {
            // '*'
            const count = parseInteger(this.buf.toString("latin1", start, lineEnd));
            if (count === -1) {
              value = null;
              break;
            }
            if (count < 0) throw new RespProtocolError(`invalid array length ${count}`);
            if (count === 0) {
              value = [];
              break;
            }
            this.stack.push({ items: [], remaining: count });
            continue;
          }
          default:
            throw new RespProtocolError(`unexpected RESP type byte 0x${(type ?? 0).toString(16)}`);
        }
      }
      this.emit(value);
    }
  }

  /** Adds a finished value to the innermost open array, closing arrays that become complete. */
  private emit(value: RespValue): void {
    let current = value;
    for (;;) {
      const top = this.stack[this.stack.length - 1];
      if (top === undefined) {
        this.onValue(current);
        return;
      }
      top.items.push(current);
      top.remaining -= 1;
      if (top.remaining > 0) return;
      this.stack.pop();
      current = top.items;
    }
  }
}

function parseInteger(text: string): number {
  if (!/^-?\d+$/.test(text)) throw new RespProtocolError(`invalid integer ${JSON.stringify(text)}`);
  return Number(text);
}

/** FIFO with O(1) shift; Array#shift is O(n) and a busy connection can have many in flight. */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head += 1;
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  takeAll(): T[] {
    const rest = this.items.slice(this.head) as T[];
    this.items = [];
    this.head = 0;
    return rest;
  }
}

interface Pending {
  resolve(value: RespValue): void;
  reject(error: Error): void;
}

export interface RespConnectOptions {
  /** Give up connecting after this long (default 5000 ms). */
  timeoutMs?: number;
}

export class RespConnection {
  private readonly pending = new Fifo<Pending>();
  private readonly parser: RespParser;
  private pushHandler: ((value: RespValue) => void) | null = null;
  private failure: Error | null = null;
  private resolveClosed!: () => void;
  /** Settles (never rejects) once the socket is gone, for whatever reason. */
  readonly closed: Promise<void>;

  private constructor(private readonly socket: net.Socket) {
    this.closed = new Promise<void>((resolve) => (this.resolveClosed = resolve));
    this.parser = new RespParser((value) => this.onValue(value));
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      try {
        this.parser.push(chunk);
      } catch (err) {
        this.fail(err instanceof Error ? err : new RespProtocolError(String(err)));
      }
    });
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => {
      this.fail(new Error("redis connection closed"));
      this.resolveClosed();
    });
  }

  static connect(host: string, port: number, opts: RespConnectOptions = {}): Promise<RespConnection> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    return new Promise<RespConnection>((resolve, reject) => {
      const socket = net.createConnection({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`timed out connecting to redis at ${host}:${port} after ${timeoutMs} ms`));
      }, timeoutMs);
      const onError = (err: Error) => {
        clearTimeout(timer);
        reject(new Error(`cannot connect to redis at ${host}:${port}: ${err.message}`, { cause: err }));
      };
      socket.once("error", onError);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.off("error", onError);
        resolve(new RespConnection(socket));
      });
    });
  }

  /** False once the socket failed or was closed; such a connection only rejects. */
  get isOpen(): boolean {
    return this.failure === null;
  }

  /** Sends one command. Resolves with the reply (a RespError for Redis errors). */
  command(args: readonly RespArg[]): Promise<RespValue> {
    const refusal = this.refusal();
    if (refusal !== null) return Promise.reject(refusal);
    const reply = new Promise<RespValue>((resolve, reject) => this.pending.push({ resolve, reject }));
    this.socket.write(encodeCommand(args));
    return reply;
  }

  /**
   * Sends several commands in one write. Because they are written together, no command from
   * another caller of this connection can land between them, and the replies come back in
   * the same order.
   */
  pipeline(commands: readonly (readonly RespArg[])[]): Promise<RespValue[]> {
    if (commands.length === 0) return Promise.resolve([]);
    const refusal = this.refusal();
    if (refusal !== null) return Promise.reject(refusal);
    const replies = commands.map(
      () => new Promise<RespValue>((resolve, reject) => this.pending.push({ resolve, reject })),
    );
    this.socket.write(Buffer.concat(commands.map(encodeCommand)));
    return Promise.all(replies);
  }

  /**
   * Switches the connection to pub/sub mode: sends args (SUBSCRIBE/PSUBSCRIBE ...) and from
   * then on hands every reply, confirmations included, to onPush. Further command() calls are
   * refused, as Redis would refuse most of them on a subscribed connection anyway.
   */
  subscribe(args: readonly RespArg[], onPush: (value: RespValue) => void): void {
    if (this.failure !== null) throw this.failure;
    if (this.pending.length > 0) throw new Error("cannot subscribe with commands in flight");
    this.pushHandler = onPush;
    this.socket.write(encodeCommand(args));
  }

  /** Closes the socket; commands still in flight are rejected. */
  async close(): Promise<void> {
    this.fail(new Error("redis connection closed by client"));
    await this.closed;
  }

  private refusal(): Error | null {
    if (this.failure !== null) return this.failure;
    if (this.pushHandler !== null) return new Error("connection is in pub/sub mode");
    return null;
  }

  private onValue(value: RespValue): void {
    if (this.pushHandler !== null) {
      this.pushHandler(value);
      return;
    }
    const waiter = this.pending.shift();
    if (waiter === undefined) {
      // A reply nobody asked for means we lost track of the stream; continuing would hand
      // callers each other's replies.
      this.fail(new RespProtocolError("unexpected reply with no command in flight"));
      return;
    }
    waiter.resolve(value);
  }

  private fail(error: Error): void {
    if (this.failure !== null) return;
    this.failure = error;
    this.socket.destroy();
    for (const waiter of this.pending.takeAll()) waiter.reject(error);
  }
}

export interface RespPoolOptions {
  host: string;
  port: number;
  /** Shared connections for plain commands, used round-robin (default 4). */
  size?: number;
  /** Exclusive connections kept idle for reuse after a transaction/blocking call (default 8). */
  maxIdleExclusive?: number;
  connectTimeoutMs?: number;
}

interface SharedSlot {
  promise: Promise<RespConnection>;
  conn: RespConnection | null;
  failed: boolean;
}

/**
 * Connections to one Redis server. Shared connections are opened lazily and replaced when
 * they die (e.g. Redis restarted), so a transient outage fails requests instead of the pool.
 */
export class RespPool {
  private readonly slots: (SharedSlot | null)[];
  private next = 0;
  private readonly idle: RespConnection[] = [];
  private readonly lent = new Set<RespConnection>();
  private readonly maxIdle: number;
  private isClosed = false;

  constructor(private readonly opts: RespPoolOptions) {
    this.slots = new Array<SharedSlot | null>(Math.max(1, opts.size ?? 4)).fill(null);
    this.maxIdle = opts.maxIdleExclusive ?? 8;
  }

  /** Runs one command on a shared connection. */
  async command(args: readonly RespArg[]): Promise<RespValue> {
    return (await this.shared()).command(args);
  }

  /** Runs commands back to back on one shared connection (ordered, not atomic). */
  async pipeline(commands: readonly (readonly RespArg[])[]): Promise<RespValue[]> {
    return (await this.shared()).pipeline(commands);
  }

  /**
   * Lends a connection nobody else uses until fn settles. It goes back to the idle list only
   * if fn succeeded and the socket is healthy; after a failure its state (half-finished MULTI,
   * a blocked BLPOP) is unknown, so it is closed. Aborting signal closes it immediately, which
   * is how an abandoned blocking command is cancelled.
   */
  async withExclusive<T>(fn: (conn: RespConnection) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const conn = await this.takeIdle();
    this.lent.add(conn);
    const onAbort = () => void conn.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    let ok = false;
    try {
      if (signal?.aborted) throw new Error("aborted");
      const result = await fn(conn);
      ok = true;
      return result;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.lent.delete(conn);
      if (ok && conn.isOpen && !this.isClosed && this.idle.length < this.maxIdle) {
        this.idle.push(conn);
      } else {
        void conn.close();
      }
    }
  }

  /**
   * Opens a connection owned by the caller (e.g. for pub/sub, whose state cannot be undone
   * cheaply). The pool still closes it on close().
   */
  async dedicated(): Promise<RespConnection> {
    const conn = await this.open();
    this.lent.add(conn);
    void conn.closed.then(() => this.lent.delete(conn));
    return conn;
  }

  async close(): Promise<void> {
    this.isClosed = true;
    const all: Promise<void>[] = [];
    for (const slot of this.slots) {
      if (slot !== null) all.push(slot.promise.then((c) => c.close(), () => undefined));
    }
    this.slots.fill(null);
    for (const conn of this.idle.splice(0)) all.push(conn.close());
    for (const conn of this.lent) all.push(conn.close());
    await Promise.all(all);
  }

  private shared(): Promise<RespConnection> {
    const index = this.next;
    this.next = (index + 1) % this.slots.length;
    const slot = this.slots[index];
    if (slot && !slot.failed && (slot.conn === null || slot.conn.isOpen)) return slot.promise;
    const fresh: SharedSlot = { promise: this.open(), conn: null, failed: false };
    fresh.promise.then(
      (conn) => {
        fresh.conn = conn;
        // If the pool closed while we were connecting, nobody else will close this one.
        if (this.isClosed) void conn.close();
      },
      () => {
        fresh.failed = true;
      },
    );
    this.slots[index] = fresh;
    return fresh.promise;
  }

  private async takeIdle(): Promise<RespConnection> {
    for (let conn = this.idle.pop(); conn !== undefined; conn = this.idle.pop()) {
      if (conn.isOpen) return conn;
    }
    return this.open();
  }

  private async open(): Promise<RespConnection> {
    if (this.isClosed) throw new Error("redis pool is closed");
    const timeout = this.opts.connectTimeoutMs;
    return RespConnection.connect(this.opts.host, this.opts.port, timeout === undefined ? {} : { timeoutMs: timeout });
  }
}
