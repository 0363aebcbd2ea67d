// GET /docs: the API reference a person reads, rendered in the browser from the OpenAPI document
// embedded in the page itself. One self-contained HTML file (no CDN, no fonts, no fetch), so it
// works offline and saved to disk. Served under a nonce CSP (page-security.ts): `nonce` marks
// its inline style and script.

export function docsPageHtml(spec: Record<string, unknown>, nonce: string): string {
  // `<` escaped, so no string in the spec can close the script element.
  const json = JSON.stringify(spec).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>inference mesh API reference</title>
<style nonce="${nonce}">
  :root { --fg: #1b1f24; --muted: #5b6570; --line: #d9dee3; --bg: #fff; --code: #f4f6f8;
    --get: #1f6feb; --post: #1a7f37; --put: #9a6700; --patch: #8250df; --delete: #cf222e; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9aa4ae; --line: #30363d; --bg: #0d1117; --code: #161b22; } }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
  main { max-width: 980px; margin: 0 auto; padding: 24px 20px 80px; }
  h1 { font-size: 26px; margin: 0 0 4px; } h2 { margin-top: 36px; border-bottom: 1px solid var(--line); padding-bottom: 6px; }
  h4 { margin: 14px 0 6px; font-size: 14px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
  code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; background: var(--code); border-radius: 4px; }
  code { padding: 1px 4px; } pre { padding: 10px; overflow-x: auto; }
  details.op { border: 1px solid var(--line); border-radius: 6px; margin: 8px 0; }
  details.op > summary { cursor: pointer; padding: 8px 12px; list-style: none; display: flex; gap: 10px; align-items: baseline; }
  details.op > summary::-webkit-details-marker { display: none; }
  details.op[open] > summary { border-bottom: 1px solid var(--line); }
  .body { padding: 4px 14px 12px; }
  .m { font: 700 12px ui-monospace, monospace; color: #fff; border-radius: 4px; padding: 2px 6px; min-width: 58px; text-align: center; text-transform: uppercase; }
  .m.get { background: var(--get); } .m.post { background: var(--post); } .m.put { background: var(--put); } .m.patch { background: var(--patch); } .m.delete { background: var(--delete); }
  .path { font-family: ui-monospace, monospace; font-weight: 600; } .sum { color: var(--muted); }
  table { border-collapse: collapse; width: 100%; font-size: 14px; } th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
  .schema ul { list-style: none; padding-left: 18px; margin: 2px 0; border-left: 1px dotted var(--line); }
  .schema > ul { padding-left: 0; border: 0; }
  .t { color: var(--post); font-family: ui-monospace, monospace; font-size: 13px; } .req { color: var(--delete); font-size: 12px; } .d { color: var(--muted); }
  .auth { font-size: 13px; color: var(--muted); } #filter { width: 100%; padding: 8px; margin: 12px 0; font-size: 15px; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--fg); }
</style>
</head>
<body>
<main>
<h1 id="title"></h1>
<p id="desc" class="d"></p>
<p class="auth">Machine-readable: <a href="/openapi.json">/openapi.json</a>. Every error is <code>{"error", "code", "requestId"}</code>; every response carries <code>x-request-id</code>.</p>
<input id="filter" placeholder="Filter routes (path, method or words)" aria-label="Filter routes">
<div id="ops"></div>
<h2 id="errors">Error codes</h2>
<table id="codes"><thead><tr><th>code</th><th>status</th><th>meaning</th></tr></thead><tbody></tbody></table>
</main>
<script type="application/json" id="spec" nonce="${nonce}">${json}</script>
<script nonce="${nonce}">
(function () {
  var spec = JSON.parse(document.getElementById("spec").textContent);
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) { if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]); }
    (kids || []).forEach(function (c) { if (c) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  // Inline code in descriptions: \`x\` -> <code>x</code>, everything else as text.
  function rich(text) {
    var span = el("span");
    String(text || "").split(/(\`[^\`]*\`)/).forEach(function (part) {
      if (/^\`[^\`]*\`$/.test(part)) span.appendChild(el("code", { text: part.slice(1, -1) }));
      else span.appendChild(document.createTextNode(part));
    });
    return span;
  }
  function resolve(s) {
    if (s && s.$ref) { var name = s.$ref.split("/").pop(); return (spec.components.schemas || {})[name] || {}; }
    return s || {};
  }
  function typeOf(s) {
    s = resolve(s);
    if (s.enum) return s.enum.map(function (v) { return JSON.stringify(v); }).join(" | ");
    if (s.const !== undefined) return JSON.stringify(s.const);
    if (s.anyOf || s.oneOf) return (s.anyOf || s.oneOf).map(typeOf).join(" | ");
    if (s.type === "array") return typeOf(s.items || {}) + "[]";
    if (Array.isArray(s.type)) return s.type.join(" | ");
    if (s.type === "object" && !s.properties && s.additionalProperties) return "{ string: " + typeOf(s.additionalProperties) + " }";
    return s.type || (s.format === "binary" ? "binary" : "any");
  }
  function limits(s) {
    var out = [];
    if (s.minimum !== undefined) out.push(">= " + s.minimum); if (s.maximum !== undefined) out.push("<= " + s.maximum);
    if (s.minLength !== undefined) out.push("length >= " + s.minLength); if (s.maxLength !== undefined) out.push("length <= " + s.maxLength);
    if (s.minItems !== undefined) out.push("items >= " + s.minItems); if (s.maxItems !== undefined) out.push("items <= " + s.maxItems);
    if (s.pattern) out.push("pattern " + s.pattern); if (s.default !== undefined) out.push("default " + JSON.stringify(s.default));
    return out.length ? " (" + out.join(", ") + ")" : "";
  }
  function schemaTree(s, depth) {
    s = resolve(s);
    var ul = el("ul");
    if (depth > 6) return ul;
    var variants = s.anyOf || s.oneOf;
    if (variants && !s.properties) {
      variants.forEach(function (v, i) { ul.appendChild(el("li", {}, [el("span", { class: "d", text: "variant " + (i + 1) + ": " }), el("span", { class: "t", text: typeOf(v) }), schemaTree(v, depth + 1)])); });
      return ul;
    }
    var obj = s.type === "array" ? resolve(s.items) : s;
    var props = obj.properties || {};
    var req = obj.required || [];
    Object.keys(props).forEach(function (name) {
      var p = resolve(props[name]);
      var li = el("li", {}, [el("code", { text: name }), " ", el("span", { class: "t", text: typeOf(p) }), req.indexOf(name) >= 0 ? el("span", { class: "req", text: " required" }) : null, el("span", { class: "d", text: limits(p) })]);
      if (p.description) li.appendChild(el("div", { class: "d" }, [rich(p.description)]));
      var inner = p.type === "array" ? resolve(p.items) : p;
      if (inner.properties || (inner.anyOf && inner.anyOf.some(function (x) { return resolve(x).properties; }))) li.appendChild(schemaTree(p, depth + 1));
      ul.appendChild(li);
    });
    return ul;
  }
  function schemaBlock(s) {
    var r = resolve(s);
    var box = el("div", { class: "schema" }, [el("span", { class: "t", text: typeOf(r) })]);
    if (r.description) box.appendChild(el("div", { class: "d" }, [rich(r.description)]));
    box.appendChild(schemaTree(r, 0));
    return box;
  }
  var authText = { apiKey: "API key (Authorization: Bearer mesh_...)", adminToken: "operator admin token" };
  function operation(path, method, op) {
    var body = el("div", { class: "body" });
    if (op.description) body.appendChild(el("p", {}, [rich(op.description)]));
    var sec = (op.security || []).map(function (s) { return authText[Object.keys(s)[0]] || Object.keys(s)[0]; });
    body.appendChild(el("p", { class: "auth", text: "Auth: " + (sec.length ? sec.join(" or ") : "none") }));
    if (op.parameters && op.parameters.length) {
      body.appendChild(el("h4", { text: "Parameters" }));
      var t = el("table", {}, [el("thead", {}, [el("tr", {}, [el("th", { text: "name" }), el("th", { text: "in" }), el("th", { text: "type" }), el("th", { text: "meaning" })])])]);
      var tb = el("tbody");
      op.parameters.forEach(function (p) { tb.appendChild(el("tr", {}, [el("td", {}, [el("code", { text: p.name })]), el("td", { text: p.in + (p.required ? " (required)" : "") }), el("td", { class: "t", text: typeOf(p.schema) }), el("td", {}, [rich(p.description || "")])])); });
      t.appendChild(tb); body.appendChild(t);
    }
    if (op.requestBody) {
      body.appendChild(el("h4", { text: "Body" }));
      if (op.requestBody.description) body.appendChild(el("p", { class: "d" }, [rich(op.requestBody.description)]));
      Object.keys(op.requestBody.content).forEach(function (type) {
        var c = op.requestBody.content[type];
        body.appendChild(el("div", { class: "d", text: type }));
        body.appendChild(schemaBlock(c.schema || {}));
        if (c.example !== undefined) body.appendChild(el("pre", { text: JSON.stringify(c.example, null, 2) }));
      });
    }
    body.appendChild(el("h4", { text: "Responses" }));
    Object.keys(op.responses).forEach(function (status) {
      var r = op.responses[status];
      var d = el("div", {}, [el("strong", { text: status + " " })]);
      String(r.description || "").split("\\n\\n").forEach(function (line, i) { if (i) d.appendChild(el("br")); d.appendChild(rich(line)); });
      body.appendChild(d);
      var c = r.content && r.content["application/json"];
      if (c && c.schema && status < 400) body.appendChild(schemaBlock(c.schema));
    });
    var det = el("details", { class: "op", "data-text": (method + " " + path + " " + (op.summary || "") + " " + (op.description || "")).toLowerCase(), id: op.operationId || "" }, [
      el("summary", {}, [el("span", { class: "m " + method, text: method }), el("span", { class: "path", text: path }), el("span", { class: "sum", text: op.summary || "" })]),
      body,
    ]);
    return det;
  }
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  document.getElementById("desc").appendChild(rich(spec.info.description));
  var byTag = {};
  Object.keys(spec.paths).forEach(function (path) {
    Object.keys(spec.paths[path]).forEach(function (method) {
      var op = spec.paths[path][method];
      var tag = (op.tags || ["Other"])[0];
      (byTag[tag] = byTag[tag] || []).push(operation(path, method, op));
    });
  });
  var ops = document.getElementById("ops");
  (spec.tags || []).map(function (t) { return t.name; }).concat(Object.keys(byTag)).filter(function (t, i, a) { return a.indexOf(t) === i && byTag[t]; }).forEach(function (tag) {
    ops.appendChild(el("h2", { text: tag }));
    byTag[tag].forEach(function (d) { ops.appendChild(d); });
  });
  var codes = (spec.info["x-error-codes"]) || {};
  var tbody = document.querySelector("#codes tbody");
  Object.keys(codes).forEach(function (code) { tbody.appendChild(el("tr", {}, [el("td", {}, [el("code", { text: code })]), el("td", { text: String(codes[code].status) }), el("td", {}, [rich(codes[code].description)])])); });
  document.getElementById("filter").addEventListener("input", function (e) {
    var q = e.target.value.toLowerCase().trim();
    document.querySelectorAll("details.op").forEach(function (d) { d.style.display = !q || d.getAttribute("data-text").indexOf(q) >= 0 ? "" : "none"; });
  });
  if (location.hash) { var target = document.getElementById(location.hash.slice(1)); if (target && target.tagName === "DETAILS") target.open = true; }
})();
</script>
</body>
</html>
`;
}
