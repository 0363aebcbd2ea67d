// D1 with a bounded retry on transient errors. Locally several workerd processes (one edge per
// colo in the multi-host mode) share one SQLite file, and a read that met another process's
// write lock failed the call with internal_error (about 1 in 120-600 calls under load): workerd
// logs SQLITE_BUSY, but Miniflare's D1 hands the Worker only "internal error; reference = ...",
// the same words D1 uses for its own transient failures. So:
//   - "database is locked" (SQLITE_BUSY) is retried for any statement: it did not run (a batch
//     is one transaction, rolled back whole), so running it again cannot apply it twice;
//   - "internal error" and "Network connection lost" are retried only for reads (SELECT), which
//     are safe to run twice; a write that met them goes to the caller, who knows whether to retry.
// Anything else passes through at once (STYLE: retry only named transient errors, a bounded
// number of times).

import type { D1Database, D1PreparedStatement } from "@cloudflare/workers-types";

/** Pauses before the 2nd, 3rd and 4th attempts; then the error goes to the caller. */
const BACKOFF_MS = [10, 40, 120];

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

export function isBusy(err: unknown): boolean {
  return /SQLITE_BUSY|database is locked/i.test(message(err));
}

/** Whether `err` is worth another try: a lock for any statement, D1's transient words for reads. */
export function isTransient(err: unknown, read: boolean): boolean {
  return isBusy(err) || (read && /internal error|Network connection lost/i.test(message(err)));
}

const isRead = (sql: string) => /^\s*select\b/i.test(sql);

async function retryBusy<T>(op: () => Promise<T>, read: boolean, sleep: (ms: number) => Promise<void>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (attempt >= BACKOFF_MS.length || !isTransient(err, read)) throw err;
      await sleep(BACKOFF_MS[attempt]!);
    }
  }
}

const REAL = Symbol("d1-statement");
type Wrapped = D1PreparedStatement & { [REAL]: D1PreparedStatement; read: boolean };

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `db` whose statements and batches retry on SQLITE_BUSY; everything else is `db`'s own. */
/** One wrapper per binding for the isolate's life: the middleware asks on every request. */
const wrapped = new WeakMap<D1Database, D1Database>();

export function withBusyRetry(db: D1Database, sleep: (ms: number) => Promise<void> = defaultSleep): D1Database {
  if (!db) return db; // in-process app tests run without the binding
  if (sleep !== defaultSleep) return wrapWithRetry(db, sleep);
  let w = wrapped.get(db);
  if (!w) wrapped.set(db, (w = wrapWithRetry(db, sleep)));
  return w;
}

function wrapWithRetry(db: D1Database, sleep: (ms: number) => Promise<void>): D1Database {
  const wrap = (stmt: D1PreparedStatement, read: boolean): Wrapped =>
    ({
      [REAL]: stmt,
      read,
      bind: (...values: unknown[]) => wrap(stmt.bind(...values), read),
      first: (col?: string) => retryBusy(() => (col === undefined ? stmt.first() : stmt.first(col)), read, sleep),
      run: () => retryBusy(() => stmt.run(), read, sleep),
      all: () => retryBusy(() => stmt.all(), read, sleep),
      raw: (opts?: { columnNames?: boolean }) => retryBusy(() => stmt.raw(opts as { columnNames: true }), read, sleep),
    }) as unknown as Wrapped;
  // D1's batch takes only its own statement objects: unwrap ours.
  const real = (s: D1PreparedStatement) => (s as Partial<Wrapped>)[REAL] ?? s;
  const allReads = (stmts: D1PreparedStatement[]) => stmts.every((s) => (s as Partial<Wrapped>).read === true);
  return new Proxy(db, {
    get(target, prop, receiver) {
      if (prop === "prepare") return (query: string) => wrap(target.prepare(query), isRead(query));
      if (prop === "batch") return <T>(stmts: D1PreparedStatement[]) => retryBusy(() => target.batch<T>(stmts.map(real)), allReads(stmts), sleep);
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}
