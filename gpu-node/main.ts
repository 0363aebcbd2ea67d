// Entry point of a node agent process: config from the environment, SIGTERM/SIGINT drain.

import { rootCertificates } from "node:tls";
import { Agent, setGlobalDispatcher } from "undici";
import { makeLogger } from "../protocol/log.js";
import { exitWhenParentDies } from "../runtime/parent-watch.js";
import { startAgent } from "./agent.js";
import { ConfigError, nodeConfigFromEnv, printableConfig } from "./config.js";
import { serveMetrics } from "./metrics.js";

const log = makeLogger("node");
let config;
try {
  config = nodeConfigFromEnv();
} catch (err) {
  if (err instanceof ConfigError) {
    log("error", err.message);
    process.exit(2);
  }
  throw err;
}
log("info", "starting", { config: printableConfig(config) });
// MESH_CA_FILE also covers this process's fetches (artifact and tokenizer downloads from an
// https edge or stand-in signed by the same CA); the router socket gets it in agent.ts.
if (config.ca) setGlobalDispatcher(new Agent({ connect: { ca: [...rootCertificates, config.ca.pem] } }));
const agent = startAgent(config);
if (config.metrics) {
  try {
    const { url } = await serveMetrics(agent.metrics, config.metrics);
    log("info", "metrics listening", { url });
  } catch (err) {
    // Configured and not possible (port taken): a configuration error, as at start.
    log("error", "metrics listener failed to start", { error: (err as Error).message });
    process.exit(2);
  }
}
void agent.done.then(({ reason }) => process.exit(reason === "unauthorized" ? 3 : 0));
let stopping = false;
const shutdown = (why: string) => {
  if (stopping) return;
  stopping = true;
  log("info", `${why}: draining`);
  void agent.drain().then(() => process.exit(0));
};
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
exitWhenParentDies(() => shutdown("launcher gone"));
