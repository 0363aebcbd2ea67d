// D1 with a bounded retry on the one transient error a statement can meet before it ran:
// "database is locked" (SQLITE_BUSY). Locally several workerd processes (one edge per colo in
// the multi-host mode) share one SQLite file, and a read that met another process's write lock
// failed the call with internal_error (about 1 in 120-600 calls under load). A busy statement
// did not run (a batch is one transaction, rolled back whole), so running it again cannot apply
// it twice. Any other error passes through at once (STYLE: retry only named transient errors,
// a bounded number of times).

import type { D1Database, D1PreparedStatement } from "@cloudflare/workers-types";

/** Pauses before the 2nd, 3rd and 4th attempts; then the error goes to the caller. */
const BACKOFF_MS = [10, 40, 120];

export function isBusy(err: unknown): boolean {
  const m = err instanceof Error ? err.message : String(err);
  return /SQLITE_BUSY|database is locked/i.test(m);
}

async function retryBusy<T>(op: () => Promise<T>, sleep: (ms: number) => Promise<void>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (attempt >= BACKOFF_MS.length || !isBusy(err)) throw err;
      await sleep(BACKOFF_MS[attempt]!);
    }
  }
}

const REAL = Symbol("d1-statement");
type Wrapped = D1PreparedStatement & { [REAL]: D1PreparedStatement };

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `db` whose statements and batches retry on SQLITE_BUSY; everything else is `db`'s own. */
export function withBusyRetry(db: D1Database, sleep: (ms: number) => Promise<void> = defaultSleep): D1Database {
  if (!db) return db; // in-process app tests run without the binding
  const wrap = (stmt: D1PreparedStatement): Wrapped =>
    ({
      [REAL]: stmt,
      bind: (...values: unknown[]) => wrap(stmt.bind(...values)),
      first: (col?: string) => retryBusy(() => (col === undefined ? stmt.first() : stmt.first(col)), sleep),
      run: () => retryBusy(() => stmt.run(), sleep),
      all: () => retryBusy(() => stmt.all(), sleep),
      raw: (opts?: { columnNames?: boolean }) => retryBusy(() => stmt.raw(opts as { columnNames: true }), sleep),
    }) as unknown as Wrapped;
  // D1's batch takes only its own statement objects: unwrap ours.
  const real = (s: D1PreparedStatement) => (s as Partial<Wrapped>)[REAL] ?? s;
  return new Proxy(db, {
    get(target, prop, receiver) {
      if (prop === "prepare") return (query: string) => wrap(target.prepare(query));
      if (prop === "batch") return <T>(stmts: D1PreparedStatement[]) => retryBusy(() => target.batch<T>(stmts.map(real)), sleep);
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}
