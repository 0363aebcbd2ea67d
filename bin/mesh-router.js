#!/usr/bin/env node
// mesh-router: the installable entry point of a region router. Loads tsx's ESM hooks in this
// process (no child process, so SIGTERM from systemd or a container runtime reaches the router's
// drain directly), then runs regions/main.ts, which reads its configuration from the environment
// (docs/deploy.md, deploy/router.env.example). tsx comes from this package's own node_modules,
// so the command works from any working directory of an installed checkout (`npm ci`).
import { register } from "tsx/esm/api";

register();
await import("../regions/main.ts");
