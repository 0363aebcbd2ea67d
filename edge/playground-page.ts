// GET /playground: one self-contained HTML page (inline CSS and JS, nothing fetched from
// elsewhere) to try a generative model by hand: enter a key, pick a model, write a prompt and
// watch the tokens arrive over the WebSocket stream route, with the progress events of a cold
// start shown as they come. The key travels as the `mesh.key.<key>` subprotocol (browsers
// cannot set headers on a WebSocket), is kept in sessionStorage (this tab, until it closes),
// never in a URL (a `?key=` is not used, only scrubbed from the address bar), and never leaves
// for another origin. It runs under a nonce CSP (page-security.ts). The model list comes from GET /v1/models when the key may read it (scope `manage`);
// otherwise the name is typed.
//
// As in status-page.ts, the browser script is a plain string: no backticks, "${" or
// backslashes in it, and every element is built with createElement/textContent, never
// innerHTML, so model names and generated text cannot inject markup.

const STYLE = `
  :root { color-scheme: light dark; --fg: #1d232a; --muted: #687482; --bg: #f6f7f9; --card: #fff; --line: #dfe3e8; --accent: #2563eb; --bad: #c0392b; --tok: #e8f0fe; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e6e9ed; --muted: #97a1ad; --bg: #14171b; --card: #1c2026; --line: #2c323a; --accent: #6ea0ff; --bad: #ff7b6b; --tok: #20304d; } }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
  header { padding: 14px 22px; border-bottom: 1px solid var(--line); display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 17px; margin: 0; }
  header span { color: var(--muted); }
  main { max-width: 1040px; margin: 18px auto; padding: 0 18px; display: grid; grid-template-columns: 320px 1fr; gap: 18px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px; }
  label { display: block; margin: 8px 0 3px; color: var(--muted); font-size: 12px; }
  input, textarea, select { width: 100%; padding: 6px 8px; border: 1px solid var(--line); border-radius: 5px; background: var(--bg); color: var(--fg); font: inherit; }
  textarea { min-height: 90px; resize: vertical; }
  .row { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
  button { margin-top: 12px; padding: 7px 14px; border-radius: 5px; border: 1px solid var(--accent); background: var(--accent); color: #fff; font: inherit; cursor: pointer; }
  button.secondary { background: transparent; color: var(--accent); }
  button:disabled { opacity: .5; cursor: default; }
  #output { white-space: pre-wrap; word-break: break-word; font: 15px/1.6 ui-monospace, SFMono-Regular, Menlo, monospace; min-height: 160px; }
  #output .prompt { color: var(--muted); }
  #output .tok { background: var(--tok); border-radius: 2px; transition: background 1.2s; }
  #output .tok.old { background: transparent; }
  #status { margin: 10px 0 0; color: var(--muted); min-height: 1.4em; }
  #status.bad { color: var(--bad); }
  #progress { height: 4px; background: var(--line); border-radius: 2px; overflow: hidden; margin-top: 8px; }
  #progress div { height: 100%; width: 0; background: var(--accent); transition: width .2s; }
  #events { margin: 10px 0 0; padding-left: 18px; color: var(--muted); font-size: 12px; max-height: 180px; overflow: auto; }
  .stats { display: flex; gap: 18px; color: var(--muted); font-size: 12px; margin-top: 8px; }
  .stats b { color: var(--fg); font-weight: 600; }
`;

const SCRIPT = `
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var params = new URLSearchParams(location.search);
  var keyInput = $("key"), modelInput = $("model"), models = $("models");
  var socket = null, current = null, seq = 0, tokens = 0, startedAt = 0, firstAt = 0;
  function keep(name, value) { try { sessionStorage.setItem(name, value); } catch (e) { /* storage disabled */ } }
  if (params.has("key")) {
    params.delete("key");
    var rest = params.toString();
    try { history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash); } catch (e) { /* ignore */ }
  }
  try { localStorage.removeItem("mesh.playground.key"); } catch (e) { /* where older pages kept it */ }
  keyInput.value = (function () { try { return sessionStorage.getItem("mesh.playground.key"); } catch (e) { return null; } })() || "";
  modelInput.value = params.get("model") || localStorage.getItem("mesh.playground.model") || "tiny-gpt";

  function setState(s) { document.body.setAttribute("data-state", s); $("go").disabled = s === "streaming" || s === "connecting"; $("stop").disabled = s !== "streaming" && s !== "connecting"; }
  function status(text, bad) { var el = $("status"); el.textContent = text; el.className = bad ? "bad" : ""; }
  function note(text) { var li = document.createElement("li"); li.textContent = text; $("events").appendChild(li); li.scrollIntoView({ block: "nearest" }); }
  function bar(pct) { $("progress").firstChild.style.width = Math.max(0, Math.min(100, pct)) + "%"; }
  function ms(n) { return Math.round(n) + " ms"; }

  function loadModels() {
    var key = keyInput.value.trim();
    if (!key) return;
    fetch("/v1/models", { headers: { authorization: "Bearer " + key } }).then(function (r) { return r.ok ? r.json() : null; }).then(function (body) {
      if (!body || !body.models) return;
      while (models.firstChild) models.removeChild(models.firstChild);
      body.models.forEach(function (m) { var o = document.createElement("option"); o.value = m.name; models.appendChild(o); });
    }).catch(function () {});
  }
  keyInput.addEventListener("change", function () { keep("mesh.playground.key", keyInput.value.trim()); loadModels(); });
  loadModels();

  function num(id) { var v = $(id).value.trim(); return v === "" ? undefined : Number(v); }

  function onEvent(ev) {
    if (!current || ev.id !== current) return;
    if (ev.type === "progress") {
      var text = ev.stage;
      if (ev.stage === "queued" && ev.position) text = "queued (position " + ev.position + ")";
      if (ev.stage === "loading") { text = "loading the model " + (ev.percent || 0) + "% (" + (ev.bytes || 0) + " of " + (ev.total || 0) + " bytes)"; bar(ev.percent || 0); }
      if (ev.stage === "running") { text = "running"; bar(100); }
      status(text); note(ms(performance.now() - startedAt) + "  " + text);
      return;
    }
    if (ev.type === "token") {
      tokens++;
      if (tokens === 1) { firstAt = performance.now(); $("ttft").textContent = ms(firstAt - startedAt); status("streaming"); }
      var span = document.createElement("span");
      span.className = "tok";
      span.textContent = ev.text_output;
      $("output").appendChild(span);
      setTimeout(function () { span.className = "tok old"; }, 50);
      $("count").textContent = String(tokens);
      // Tell the edge what was read, so the node may run ahead by the window and no further.
      if (tokens % 8 === 0) send({ type: "ack", id: current, tokens: tokens });
      return;
    }
    if (ev.type === "done") {
      var secs = (performance.now() - (firstAt || startedAt)) / 1000;
      $("rate").textContent = tokens > 1 && secs > 0 ? (tokens / secs).toFixed(1) + " tok/s" : "-";
      status("done: " + ev.finish_reason + ", " + ev.tokens + " tokens, " + ev.prompt_tokens + " prompt tokens, region " + (ev.region || "-") + ", node " + (ev.node || "-"));
      note(ms(performance.now() - startedAt) + "  done (" + ev.finish_reason + ")");
      current = null; setState("done");
      return;
    }
    if (ev.type === "error") {
      status(ev.code + ": " + ev.error, true); note("error " + ev.code);
      current = null; setState("error");
    }
  }

  function send(msg) { if (socket && socket.readyState === 1) socket.send(JSON.stringify(msg)); }

  function connect(model, key, then) {
    if (socket && socket.readyState === 1 && socket.meshModel === model && socket.meshKey === key) return then();
    if (socket) socket.close();
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v2/models/" + encodeURIComponent(model) + "/stream";
    var ws = new WebSocket(url, ["mesh.v1", "mesh.key." + key]);
    ws.meshModel = model; ws.meshKey = key;
    socket = ws;
    ws.onopen = then;
    ws.onmessage = function (e) { try { onEvent(JSON.parse(e.data)); } catch (err) { status("bad event: " + err, true); } };
    ws.onclose = function (e) {
      if (socket === ws) socket = null;
      if (current) { status("the socket closed (" + e.code + "): check the key and the model name", true); current = null; setState("error"); }
    };
  }

  $("go").addEventListener("click", function () {
    var key = keyInput.value.trim(), model = modelInput.value.trim();
    if (!key || !model) { status("enter a key and a model", true); return; }
    keep("mesh.playground.key", key);
    localStorage.setItem("mesh.playground.model", model);
    var out = $("output");
    while (out.firstChild) out.removeChild(out.firstChild);
    while ($("events").firstChild) $("events").removeChild($("events").firstChild);
    var prompt = document.createElement("span"); prompt.className = "prompt"; prompt.textContent = $("prompt").value; out.appendChild(prompt);
    tokens = 0; firstAt = 0; bar(0);
    ["count", "ttft", "rate"].forEach(function (id) { $(id).textContent = "-"; });
    setState("connecting"); status("connecting");
    startedAt = performance.now();
    connect(model, key, function () {
      current = "p" + (++seq);
      var parameters = { max_tokens: num("max_tokens"), temperature: num("temperature"), top_k: num("top_k"), seed: num("seed") };
      Object.keys(parameters).forEach(function (k) { if (parameters[k] === undefined) delete parameters[k]; });
      setState("streaming"); status("sent");
      send({ type: "generate", id: current, text_input: $("prompt").value, parameters: parameters, window: 64 });
    });
  });
  $("stop").addEventListener("click", function () { if (current) send({ type: "cancel", id: current }); });
  setState("idle");
})();
`;

/** The page; `nonce` marks its inline style and script for the CSP (page-security.ts). */
export function playgroundPageHtml(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Playground · inference mesh</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">${STYLE}</style>
</head>
<body data-state="idle">
<header><h1>Playground</h1><span>tokens as they are generated, through the edge, a region and a node</span></header>
<main>
  <section class="card">
    <label for="key">API key (scope infer)</label>
    <input id="key" type="password" autocomplete="off" placeholder="mesh_...">
    <label for="model">Model</label>
    <input id="model" list="models" autocomplete="off">
    <datalist id="models"></datalist>
    <label for="prompt">Prompt</label>
    <textarea id="prompt">The river</textarea>
    <div class="row">
      <div><label for="max_tokens">max_tokens</label><input id="max_tokens" type="number" min="0" max="4096" value="120"></div>
      <div><label for="temperature">temperature</label><input id="temperature" type="number" min="0" max="5" step="0.1" value="0.8"></div>
      <div><label for="top_k">top_k</label><input id="top_k" type="number" min="0" value="0"></div>
      <div><label for="seed">seed</label><input id="seed" type="number" min="0" placeholder="random"></div>
    </div>
    <button id="go">Generate</button> <button id="stop" class="secondary">Stop</button>
  </section>
  <section class="card">
    <div id="output" aria-live="polite"></div>
    <div id="progress"><div></div></div>
    <p id="status">idle</p>
    <div class="stats"><span>tokens <b id="count">-</b></span><span>first token <b id="ttft">-</b></span><span>rate <b id="rate">-</b></span></div>
    <ol id="events"></ol>
  </section>
</main>
<script nonce="${nonce}">${SCRIPT}</script>
</body>
</html>`;
}
