// The router's Redis client and the loop its periodic Redis work runs on (the report publisher
// and the keep-warm policy reader).
//
// Why a timeout on every call: a Redis (or the REST endpoint in front of it) that accepts a
// connection and then says nothing would otherwise hold a call forever, and with it the
// publisher's next tick. Each request gets its own AbortSignal.timeout; the client throws when it
// fires, which the callers already treat as "Redis unreachable" (keep the last policies, log
// once, try again next tick).
//
// Why ticks are skipped, not queued: a tick still in flight means Redis is slow; starting another
// would pile requests onto it, and the next tick's data is newer anyway.
//
// Why runSoon coalesces: a change worth telling Redis about at once (a node joining the router)
// comes in bursts (every node reconnecting after a restart); one run that starts after the
// burst's last request reads all of it, so requests made before a run starts share it, and such
// runs start at most one per `soonGapMs`.

import { Redis } from "@upstash/redis";

/** How long one router Redis request may take before it counts as Redis unreachable. */
export const ROUTER_REDIS_TIMEOUT_MS = 2_000;

export interface RedisConfig {
  url: string;
  token: string;
}

export function routerRedis(config: RedisConfig, timeoutMs = ROUTER_REDIS_TIMEOUT_MS): Redis {
  return new Redis({
    url: config.url,
    token: config.token,
    enableTelemetry: false,
    retry: { retries: 0 },
    // A function, so each request gets a fresh timeout (and the client throws when it fires;
    // a fixed signal would make an aborted request answer "Aborted" as if it were a result).
    signal: () => AbortSignal.timeout(timeoutMs),
    // One process, one client per job: no replica tokens to carry between requests.
    readYourWrites: false,
  });
}

export interface Periodic {
  /** Runs the task now, after the one in flight (if any) has ended; resolves when it has run. */
  runNow(): Promise<void>;
  /**
   * Asks for a run soon: after the one in flight (if any), and at least `soonGapMs` after the
   * last such run started. Requests made before that run starts share it.
   */
  runSoon(): void;
  /** Stops the timer and waits for a run in flight, so nothing it writes lands after stop. */
  stop(): Promise<void>;
  /** Ticks skipped because the previous run had not ended (for tests and logs). */
  readonly skipped: number;
}

/**
 * Runs `task` every `intervalMs`, never two at once: a tick that finds a run in flight is
 * skipped. `task` should not throw (its errors are swallowed here: a loop has nobody to tell).
 */
export function startPeriodic(task: () => Promise<void>, intervalMs: number, soonGapMs = 100): Periodic {
  let inflight: Promise<void> | null = null;
  let skipped = 0;
  let stopped = false;
  /** A runSoon run asked for and not started yet (its timer, or its turn behind the run in flight). */
  let soonPending = false;
  let soonStartedAt = -Infinity;
  let soonTimer: ReturnType<typeof setTimeout> | null = null;
  const safe = () => task().catch(() => undefined);
  const start = (after: Promise<void> | null, onStart?: () => void): Promise<void> => {
    const run = () => {
      onStart?.();
      return safe();
    };
    const p: Promise<void> = (after ? after.then(run) : run()).finally(() => {
      if (inflight === p) inflight = null;
    });
    inflight = p;
    return p;
  };
  const timer = setInterval(() => {
    if (inflight) skipped++;
    else void start(null);
  }, intervalMs);
  timer.unref();
  return {
    runNow: () => start(inflight),
    runSoon() {
      if (stopped || soonPending) return;
      soonPending = true;
      soonTimer = setTimeout(() => {
        soonTimer = null;
        // Pending until the task starts: a request made while this waits its turn is read by it.
        void start(inflight, () => {
          soonPending = false;
          soonStartedAt = Date.now();
        });
      }, Math.max(0, soonStartedAt + soonGapMs - Date.now()));
      soonTimer.unref();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      if (soonTimer) clearTimeout(soonTimer);
      await inflight;
    },
    get skipped() {
      return skipped;
    },
  };
}
