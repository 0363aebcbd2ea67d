#!/usr/bin/env node
// mesh-node: the installable entry point of a node agent. Loads tsx's ESM hooks in this process
// (no child process: SIGTERM reaches the agent, which drains its calls before it exits), then
// runs gpu-node/main.ts, which reads its configuration from the environment (docs/deploy.md,
// deploy/node.env.example). The agent's session child processes are started by the agent itself.
import { register } from "tsx/esm/api";

register();
await import("../gpu-node/main.ts");
