// The edge Worker: the public HTTPS API (Open Inference Protocol data plane under /v2, control
// plane under /v1, the OpenAI-compatible surface under /openai/v1) and the internal artifact
// route, assembled from one file per route group. A request a route's schema refuses is 400 in
// the one envelope (meshValidationHook), before its handler runs.

import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "./context.js";
import { init, notFoundFor, onError } from "./middleware.js";
import { meshValidationHook, type MeshApp } from "./openapi.js";
import { registerDocs } from "./routes/docs.js";
import { registerHealth } from "./routes/health.js";
import { registerInternalArtifacts } from "./routes/internal_artifacts.js";
import { registerV1Accounts } from "./routes/v1_accounts.js";
import { registerV1Aliases } from "./routes/v1_aliases.js";
import { registerV1Keys } from "./routes/v1_keys.js";
import { registerV1Models } from "./routes/v1_models.js";
import { registerV1Regions } from "./routes/v1_regions.js";
import { registerV1Traffic } from "./routes/v1_traffic.js";
import { registerV1Usage } from "./routes/v1_usage.js";
import { registerV2Models } from "./routes/v2_models.js";
import { registerPlayground } from "./routes/playground.js";
import { registerPageFiles } from "./routes/pages.js";
import { registerV1Tokenizers } from "./routes/v1_tokenizers.js";
import { registerV2Stream } from "./routes/v2_stream.js";
import { registerOpenAI } from "./routes/openai.js";

export function createApp(): MeshApp {
  const app = new OpenAPIHono<AppEnv>({ defaultHook: meshValidationHook });
  app.use("*", init());
  app.onError(onError);
  registerHealth(app);
  registerV2Models(app);
  registerV2Stream(app);
  registerOpenAI(app);
  registerV1Tokenizers(app);
  registerPlayground(app);
  registerV1Accounts(app);
  registerV1Keys(app);
  registerV1Models(app);
  registerV1Regions(app);
  registerV1Aliases(app);
  registerV1Traffic(app);
  registerV1Usage(app);
  registerInternalArtifacts(app);
  registerDocs(app);
  registerPageFiles(app);
  // Last: it reads the routes registered above, to tell a wrong method (405) from no route (404).
  app.notFound(notFoundFor(app.routes));
  return app;
}

const app = createApp();
export default app;
