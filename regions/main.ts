// Entry point of a region router process: config from the environment, SIGTERM/SIGINT drain.

import { makeLogger } from "../protocol/log.js";
import { ConfigError, printableConfig, routerConfigFromEnv } from "./config.js";
import { exitWhenParentDies } from "../runtime/parent-watch.js";
import { startRouter } from "./server.js";

const log = makeLogger("router");
let config;
try {
  config = routerConfigFromEnv();
} catch (err) {
  if (err instanceof ConfigError) {
    log("error", err.message);
    process.exit(2);
  }
  throw err;
}
log("info", "starting", { config: printableConfig(config) });
const router = await startRouter(config);
let stopping = false;
const shutdown = (why: string) => {
  if (stopping) return;
  stopping = true;
  log("info", `${why}: draining`);
  router
    .close().then(
      () => process.exit(0),
      (err) => {
        log("error", "drain failed", { error: String(err) });
        process.exit(1);
      },
    );
};
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
exitWhenParentDies(() => shutdown("launcher gone"));
