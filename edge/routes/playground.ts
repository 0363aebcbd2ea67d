// GET /playground: the page to try a generative model by hand (edge/pages/playground/). No key
// to load it; the page asks for one and uses it on the stream route.

import type { MeshApp } from "../openapi.js";
import { registerPage } from "./pages.js";

export function registerPlayground(app: MeshApp): void {
  registerPage(app, "playground", { path: "/playground", tag: "Reference", summary: "Playground: watch a generative model's tokens arrive (asks for a key)" });
}
