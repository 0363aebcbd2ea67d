// What every production main does around its own work (the router's and the node's alike):
// read its configuration once, where a bad setting ends the process with status 2 after one
// line saying which; print the configuration it runs with (printable: secrets masked); and turn
// SIGTERM, SIGINT and a launcher that went away (parent-watch.ts) into one drain, run once.

import { ConfigError } from "../protocol/config-schema.js";
import type { Logger } from "../protocol/log.js";
import { exitWhenParentDies } from "./parent-watch.js";

/** The configuration `read` returns, logged as `printable` shows it; exits 2 on a ConfigError. */
export function configOrExit<C>(log: Logger, read: () => C, printable: (config: C) => Record<string, unknown>): C {
  let config: C;
  try {
    config = read();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    log("error", err.message);
    process.exit(2);
  }
  log("info", "starting", { config: printable(config) });
  return config;
}

/**
 * Runs `drain` on the first of SIGTERM, SIGINT or the launcher's going, then exits: 0 when it
 * finished, 1 when it failed. A second signal while draining changes nothing.
 */
export function drainOnStop(log: Logger, drain: () => Promise<unknown>): void {
  let stopping = false;
  const shutdown = (why: string) => {
    if (stopping) return;
    stopping = true;
    log("info", `${why}: draining`);
    drain().then(
      () => process.exit(0),
      (err: unknown) => {
        log("error", "drain failed", { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  exitWhenParentDies(() => shutdown("launcher gone"));
}
