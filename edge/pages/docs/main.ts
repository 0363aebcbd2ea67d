// GET /docs in the browser: the API reference a person reads, drawn from GET /openapi.json (the
// document edge/openapi.ts builds from the routes' own schemas): one collapsible entry per
// operation, grouped by tag, with parameters, body and response schemas as trees, the error
// code table, a filter box, and `#<operationId>` opening that operation.

import { byId, el, type Kid } from "../dom.js";

/** The part of OpenAPI 3.1 (JSON Schema 2020-12) this page draws. */
interface Schema {
  $ref?: string;
  type?: string | string[];
  format?: string;
  description?: string;
  enum?: unknown[];
  const?: unknown;
  anyOf?: Schema[];
  oneOf?: Schema[];
  items?: Schema;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  required?: string[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  pattern?: string;
  default?: unknown;
}
interface Operation {
  operationId?: string;
  summary?: string;
  description?: string;
  tags?: string[];
  security?: Record<string, string[]>[];
  parameters?: { name: string; in: string; required?: boolean; description?: string; schema?: Schema }[];
  requestBody?: { description?: string; content: Record<string, { schema?: Schema; example?: unknown }> };
  responses: Record<string, { description?: string; content?: Record<string, { schema?: Schema }> }>;
}
interface Spec {
  info: { title: string; version: string; description?: string; "x-error-codes"?: Record<string, { status: number; description: string }> };
  tags?: { name: string }[];
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, Schema> };
}

/** Inline code in descriptions: `x` becomes <code>x</code>, everything else stays text. */
function rich(text: string | undefined): HTMLElement {
  const span = el("span");
  for (const part of String(text || "").split(/(`[^`]*`)/)) {
    if (/^`[^`]*`$/.test(part)) span.appendChild(el("code", { text: part.slice(1, -1) }));
    else span.appendChild(document.createTextNode(part));
  }
  return span;
}

function render(spec: Spec): void {
  const resolve = (s: Schema | undefined): Schema => {
    if (s?.$ref) return spec.components?.schemas?.[s.$ref.split("/").pop() ?? ""] ?? {};
    return s ?? {};
  };
  const typeOf = (raw: Schema | undefined): string => {
    const s = resolve(raw);
    if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
    if (s.const !== undefined) return JSON.stringify(s.const);
    const variants = s.anyOf ?? s.oneOf;
    if (variants) return variants.map(typeOf).join(" | ");
    if (s.type === "array") return `${typeOf(s.items)}[]`;
    if (Array.isArray(s.type)) return s.type.join(" | ");
    if (s.type === "object" && !s.properties && typeof s.additionalProperties === "object") return `{ string: ${typeOf(s.additionalProperties)} }`;
    return s.type || (s.format === "binary" ? "binary" : "any");
  };
  const limits = (s: Schema): string => {
    const out: string[] = [];
    if (s.minimum !== undefined) out.push(`>= ${s.minimum}`);
    if (s.maximum !== undefined) out.push(`<= ${s.maximum}`);
    if (s.minLength !== undefined) out.push(`length >= ${s.minLength}`);
    if (s.maxLength !== undefined) out.push(`length <= ${s.maxLength}`);
    if (s.minItems !== undefined) out.push(`items >= ${s.minItems}`);
    if (s.maxItems !== undefined) out.push(`items <= ${s.maxItems}`);
    if (s.pattern) out.push(`pattern ${s.pattern}`);
    if (s.default !== undefined) out.push(`default ${JSON.stringify(s.default)}`);
    return out.length ? ` (${out.join(", ")})` : "";
  };
  const schemaTree = (raw: Schema | undefined, depth: number): HTMLElement => {
    const s = resolve(raw);
    const ul = el("ul");
    // Deep enough for every schema we have; stops a self-referencing one.
    if (depth > 6) return ul;
    const variants = s.anyOf ?? s.oneOf;
    if (variants && !s.properties) {
      variants.forEach((v, i) => ul.appendChild(el("li", null, [el("span", { class: "d", text: `variant ${i + 1}: ` }), el("span", { class: "t", text: typeOf(v) }), schemaTree(v, depth + 1)])));
      return ul;
    }
    const obj = s.type === "array" ? resolve(s.items) : s;
    const req = obj.required ?? [];
    for (const [name, prop] of Object.entries(obj.properties ?? {})) {
      const p = resolve(prop);
      const li = el("li", null, [
        el("code", { text: name }),
        " ",
        el("span", { class: "t", text: typeOf(p) }),
        req.includes(name) ? el("span", { class: "req", text: " required" }) : null,
        el("span", { class: "d", text: limits(p) }),
      ]);
      if (p.description) li.appendChild(el("div", { class: "d" }, rich(p.description)));
      const inner = p.type === "array" ? resolve(p.items) : p;
      if (inner.properties || inner.anyOf?.some((x) => resolve(x).properties)) li.appendChild(schemaTree(p, depth + 1));
      ul.appendChild(li);
    }
    return ul;
  };
  const schemaBlock = (s: Schema | undefined): HTMLElement => {
    const r = resolve(s);
    return el("div", { class: "schema" }, [el("span", { class: "t", text: typeOf(r) }), r.description ? el("div", { class: "d" }, rich(r.description)) : null, schemaTree(r, 0)]);
  };
  const authText: Record<string, string> = { apiKey: "API key (Authorization: Bearer mesh_...)", adminToken: "operator admin token" };

  const operation = (path: string, method: string, op: Operation): HTMLDetailsElement => {
    const body: Kid[] = [];
    if (op.description) body.push(el("p", null, rich(op.description)));
    const sec = (op.security ?? []).map((s) => {
      const name = Object.keys(s)[0] ?? "";
      return authText[name] ?? name;
    });
    body.push(el("p", { class: "auth", text: `Auth: ${sec.length ? sec.join(" or ") : "none"}` }));
    if (op.parameters?.length) {
      body.push(el("h4", { text: "Parameters" }));
      body.push(
        el("table", null, [
          el("thead", null, el("tr", null, ["name", "in", "type", "meaning"].map((h) => el("th", { text: h })))),
          el(
            "tbody",
            null,
            op.parameters.map((p) =>
              el("tr", null, [
                el("td", null, el("code", { text: p.name })),
                el("td", { text: p.in + (p.required ? " (required)" : "") }),
                el("td", { class: "t", text: typeOf(p.schema) }),
                el("td", null, rich(p.description || "")),
              ]),
            ),
          ),
        ]),
      );
    }
    if (op.requestBody) {
      body.push(el("h4", { text: "Body" }));
      if (op.requestBody.description) body.push(el("p", { class: "d" }, rich(op.requestBody.description)));
      for (const [type, c] of Object.entries(op.requestBody.content)) {
        body.push(el("div", { class: "d", text: type }), schemaBlock(c.schema));
        if (c.example !== undefined) body.push(el("pre", { text: JSON.stringify(c.example, null, 2) }));
      }
    }
    body.push(el("h4", { text: "Responses" }));
    for (const [status, r] of Object.entries(op.responses)) {
      const d = el("div", null, el("strong", { text: `${status} ` }));
      String(r.description || "")
        .split("\n\n")
        .forEach((line, i) => {
          if (i) d.appendChild(el("br"));
          d.appendChild(rich(line));
        });
      body.push(d);
      const c = r.content?.["application/json"];
      if (c?.schema && Number(status) < 400) body.push(schemaBlock(c.schema));
    }
    return el("details", { class: "op", "data-text": `${method} ${path} ${op.summary || ""} ${op.description || ""}`.toLowerCase(), id: op.operationId || "" }, [
      el("summary", null, [el("span", { class: `m ${method}`, text: method }), el("span", { class: "path", text: path }), el("span", { class: "sum", text: op.summary || "" })]),
      el("div", { class: "body" }, body),
    ]);
  };

  byId("title").textContent = `${spec.info.title} ${spec.info.version}`;
  byId("desc").appendChild(rich(spec.info.description));
  const byTag = new Map<string, HTMLDetailsElement[]>();
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = op.tags?.[0] ?? "Other";
      let list = byTag.get(tag);
      if (!list) byTag.set(tag, (list = []));
      list.push(operation(path, method, op));
    }
  }
  const ops = byId("ops");
  // The document's tag order first, then any tag it does not list.
  for (const tag of new Set([...(spec.tags ?? []).map((t) => t.name), ...byTag.keys()])) {
    const list = byTag.get(tag);
    if (!list) continue;
    ops.appendChild(el("h2", { text: tag }));
    for (const d of list) ops.appendChild(d);
  }
  const tbody = byId("codes", HTMLTableElement).tBodies[0]!;
  for (const [code, c] of Object.entries(spec.info["x-error-codes"] ?? {})) {
    tbody.appendChild(el("tr", null, [el("td", null, el("code", { text: code })), el("td", { text: String(c.status) }), el("td", null, rich(c.description))]));
  }
  byId("filter", HTMLInputElement).addEventListener("input", (e) => {
    const q = (e.target as HTMLInputElement).value.toLowerCase().trim();
    document.querySelectorAll<HTMLDetailsElement>("details.op").forEach((d) => {
      d.style.display = !q || (d.getAttribute("data-text") ?? "").includes(q) ? "" : "none";
    });
  });
  if (location.hash) {
    const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target instanceof HTMLDetailsElement) target.open = true;
  }
}

async function main(): Promise<void> {
  try {
    const res = await fetch("/openapi.json", { headers: { accept: "application/json" } });
    if (!res.ok) throw new Error(`GET /openapi.json answered ${res.status}`);
    render((await res.json()) as Spec);
  } catch (e) {
    byId("title").textContent = "API reference";
    byId("desc").textContent = `Could not load /openapi.json (${e instanceof Error ? e.message : String(e)}); reload to try again.`;
  }
}

void main();
