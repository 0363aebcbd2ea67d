// Entry point of a region router process: config from the environment, SIGTERM/SIGINT drain.

import { makeLogger } from "../protocol/log.js";
import { printableConfig, routerConfigFromEnv } from "./config.js";
import { configOrExit, drainOnStop } from "../runtime/process-lifecycle.js";
import { startRouter } from "./server.js";

const log = makeLogger("router");
const config = configOrExit(log, routerConfigFromEnv, printableConfig);
const router = await startRouter(config);
drainOnStop(log, () => router.close());
