// drizzle-kit: generates numbered SQL migrations for D1 from schema/schema.ts.
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "sqlite",
  schema: "./schema/schema.ts",
  out: "./schema/migrations",
});
