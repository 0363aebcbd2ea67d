// Starts a throwaway redis-server child process for local runs and tests: bound to loopback,
// on a free port, with persistence off (no RDB snapshots, no AOF) and its working directory in
// a fresh temp folder, so nothing it does outlives stop() or touches the checkout.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants as fsConstants, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "./free-port.js";
import { Redis } from "ioredis";

export const REDIS_INSTALL_HINT =
  "redis-server not found on PATH: install it with 'apt-get install redis-server' (Debian/Ubuntu) or 'brew install redis' (macOS)";

const HOST = "127.0.0.1";
const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 3_000;
/** Attempts when we picked the port ourselves and lost the race for it to another process. */
const PORT_ATTEMPTS = 3;

// If our process exits without calling stop() (a crashed test run), do not leave orphans.
// One shared listener rather than one per server, to stay clear of MaxListeners warnings.
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  liveChildren.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of liveChildren) c.kill("SIGKILL");
    });
  }
}

export interface RedisServerHandle {
  host: string;
  port: number;
  /** The redis-server process (tests freeze it with SIGSTOP to play a Redis that never answers). */
  pid: number;
  stop(): Promise<void>;
}

/** Absolute path of redis-server found on PATH, or null. */
export function redisServerOnPath(): string | null {
  const names = process.platform === "win32" ? ["redis-server.exe", "redis-server"] : ["redis-server"];
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    for (const name of names) {
      const candidate = path.join(dir, name);
      try {
        accessSync(candidate, fsConstants.X_OK);
        return candidate;
      } catch {
        // not here; keep looking
      }
    }
  }
  return null;
}

export async function startRedisServer(opts: { port?: number; dir?: string } = {}): Promise<RedisServerHandle> {
  const binary = redisServerOnPath();
  if (binary === null) throw new Error(REDIS_INSTALL_HINT);

  // Only our own temp dir is deleted on stop(); a caller's dir is left as found.
  const ownDir = opts.dir === undefined ? mkdtempSync(path.join(os.tmpdir(), "redis-local-")) : null;
  const dir = opts.dir ?? ownDir!;
  const removeOwnDir = () => {
    if (ownDir !== null) rmSync(ownDir, { recursive: true, force: true });
  };

  try {
    for (let attempt = 1; ; attempt += 1) {
      const port = opts.port ?? (await freePort(HOST));
      try {
        return await launch(binary, port, dir, removeOwnDir);
      } catch (err) {
        // freePort cannot reserve the port, so another process may grab it before redis
        // binds; retry with a new one unless the caller asked for this exact port.
        const lostRace = err instanceof LaunchError && err.lostPort;
        if (!lostRace || opts.port !== undefined || attempt >= PORT_ATTEMPTS) throw err;
      }
    }
  } catch (err) {
    removeOwnDir();
    throw err;
  }
}

class LaunchError extends Error {
  constructor(
    message: string,
    readonly output: string,
    private readonly portTaken = false,
  ) {
    super(output.trim() === "" ? message : `${message}\n--- redis-server output ---\n${output.trim()}`);
    this.name = "LaunchError";
  }

  /** Someone else holds the port (seen as another redis answering, or as a bind failure). */
  get lostPort(): boolean {
    return this.portTaken || /address already in use/i.test(this.output);
  }
}

async function launch(binary: string, port: number, dir: string, cleanup: () => void): Promise<RedisServerHandle> {
  const child = spawn(
    binary,
    ["--port", String(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );

  // Keep the tail of its output: it is the only explanation we get when it fails to start.
  let output = "";
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-8192);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);

  let exited = false;
  let spawnError: Error | null = null;
  const exitPromise = new Promise<void>((resolve) => {
    child.once("exit", () => {
      exited = true;
      resolve();
    });
    child.once("error", (err) => {
      // Spawn failure (e.g. EACCES): there will be no "exit" event.
      spawnError = err;
      exited = true;
      resolve();
    });
  });

  track(child);
  void exitPromise.then(() => liveChildren.delete(child));

  try {
    await waitForPing(port, child.pid, () => exited, () => spawnError);
  } catch (err) {
    if (!exited) {
      child.kill("SIGKILL");
      await exitPromise;
    }
    const message = err instanceof Error ? err.message : String(err);
    throw new LaunchError(`redis-server on ${HOST}:${port} did not start: ${message}`, output, err instanceof PortTakenError);
  }

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (!exited) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
        await exitPromise;
        clearTimeout(timer);
      }
      cleanup();
    })();
    return stopping;
  };

  return { host: HOST, port, pid: child.pid!, stop };
}

/**
 * Polls until our child answers PING, the process exits, or READY_TIMEOUT_MS passes. Another
 * redis-server already on the port would answer PING too (our child then dies on "address
 * in use"), so the answer only counts if INFO reports our child's pid.
 */
async function waitForPing(
  port: number,
  childPid: number | undefined,
  hasExited: () => boolean,
  spawnError: () => Error | null,
): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError = "no answer yet";
  while (Date.now() < deadline) {
    const failure = spawnError();
    if (failure) throw failure;
    if (hasExited()) throw new Error("process exited before answering PING");
    // One attempt per poll: this loop does the retrying, and says why it gave up.
    const conn = new Redis({
      host: HOST,
      port,
      protocol: 2,
      lazyConnect: true,
      connectTimeout: 1000,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
      enableReadyCheck: false,
    });
    conn.on("error", () => undefined); // reported through the rejected commands below
    try {
      await conn.connect();
      // LOADING and similar errors reject: "up but not ready", keep polling.
      const [pong, info] = await Promise.all([conn.ping(), conn.info("server")]);
      if (pong !== "PONG") {
        lastError = `PING answered ${String(pong)}`;
      } else {
        const pid = Number(/process_id:(\d+)/.exec(String(info))?.[1]);
        if (pid === childPid) return;
        throw new PortTakenError(`port ${port} is already served by another redis-server (pid ${pid})`);
      }
    } catch (err) {
      if (err instanceof PortTakenError) throw err;
      lastError = err instanceof Error ? err.message : String(err);
    } finally {
      conn.disconnect();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no PONG within ${READY_TIMEOUT_MS} ms (${lastError})`);
}

class PortTakenError extends Error {
  override name = "PortTakenError";
}
