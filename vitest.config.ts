// Tests run in Node; end-to-end tests start the real mesh (workerd through wrangler, routers,
// node agents, redis-server) as child processes, so they get long timeouts and run one file at a time.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    reporters: ["default"],
  },
});
