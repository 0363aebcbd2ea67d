// Entry point of a node agent process: config from the environment, SIGTERM/SIGINT drain.

import { rootCertificates } from "node:tls";
import { Agent, setGlobalDispatcher } from "undici";
import { makeLogger } from "../protocol/log.js";
import { configOrExit, drainOnStop } from "../runtime/process-lifecycle.js";
import { startAgent, type AgentHandle } from "./agent.js";
import { ConfigError, nodeConfigFromEnv, printableConfig } from "./config.js";
import { serveMetrics } from "./metrics.js";

const log = makeLogger("node");
const config = configOrExit(log, nodeConfigFromEnv, printableConfig);
// MESH_CA_FILE also covers this process's fetches (artifact and tokenizer downloads from an
// https edge or stand-in signed by the same CA); the router socket gets it in agent.ts.
if (config.ca) setGlobalDispatcher(new Agent({ connect: { ca: [...rootCertificates, config.ca.pem] } }));
let agent: AgentHandle;
try {
  agent = startAgent(config);
} catch (err) {
  // A provider the machine cannot give (MESH_EXECUTION_PROVIDER=cuda or webgpu without one): said once, like a bad setting.
  if (!(err instanceof ConfigError)) throw err;
  log("error", err.message);
  process.exit(2);
}
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
drainOnStop(log, () => agent.drain());
