// Entry point of a region router process: config from the environment, SIGTERM/SIGINT drain.

import { makeLogger } from "../protocol/log.js";
import { ConfigError, printableConfig, routerConfigFromEnv } from "./config.js";
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
for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    log("info", `${sig}: draining`);
    router.close().then(
      () => process.exit(0),
      (err) => {
        log("error", "drain failed", { error: String(err) });
        process.exit(1);
      },
    );
  });
}
