// GET /playground in the browser: try a generative model by hand. Enter a key, pick a model,
// write a prompt and watch the tokens arrive over the WebSocket stream route
// (/v2/models/<m>/stream, events as in edge/stream-protocol.ts), with the progress events of a
// cold start shown as they come. The key travels as the `mesh.key.<key>` subprotocol (browsers
// cannot set headers on a WebSocket), is kept in sessionStorage (this tab, until it closes),
// never in a URL (a `?key=` is not used, only scrubbed from the address bar), and never leaves
// for another origin. The model list comes from GET /v1/models when the key may read it (scope
// `manage`); otherwise the name is typed.

import type { StreamEvent } from "../../stream-protocol.js";
import { byId, clear, el, load, scrubKeyFromUrl, store } from "../dom.js";

const STORE_KEY = "mesh.playground.key";
const STORE_MODEL = "mesh.playground.model";
/** Tokens the node may run ahead of what this page has acknowledged. */
const WINDOW = 64;
const ACK_EVERY = 8;

const keyStore = (): Storage => sessionStorage;
const prefStore = (): Storage => localStorage;

const keyInput = byId("key", HTMLInputElement);
const modelInput = byId("model", HTMLInputElement);
const models = byId("models", HTMLDataListElement);
const output = byId("output");
const events = byId("events");

type State = "idle" | "connecting" | "streaming" | "done" | "error";
interface MeshSocket {
  ws: WebSocket;
  model: string;
  key: string;
}
let socket: MeshSocket | null = null;
/** The id of the request whose events this page shows; null when none runs. */
let current: string | null = null;
let seq = 0;
let tokens = 0;
let startedAt = 0;
let firstAt = 0;

const params = scrubKeyFromUrl(STORE_KEY);
keyInput.value = load(keyStore, STORE_KEY) || "";
modelInput.value = params.get("model") || load(prefStore, STORE_MODEL) || "tiny-gpt";

function setState(s: State): void {
  document.body.setAttribute("data-state", s);
  const busy = s === "streaming" || s === "connecting";
  byId("go", HTMLButtonElement).disabled = busy;
  byId("stop", HTMLButtonElement).disabled = !busy;
}
function status(text: string, bad = false): void {
  const line = byId("status");
  line.textContent = text;
  line.className = bad ? "bad" : "";
}
function note(text: string): void {
  const li = el("li", { text });
  events.appendChild(li);
  li.scrollIntoView({ block: "nearest" });
}
function bar(pct: number): void {
  const fill = byId("progress").firstElementChild;
  if (fill instanceof HTMLElement) fill.style.width = `${Math.max(0, Math.min(100, pct))}%`;
}
const ms = (n: number): string => `${Math.round(n)} ms`;
const sinceStart = (): string => ms(performance.now() - startedAt);

function loadModels(): void {
  const key = keyInput.value.trim();
  if (!key) return;
  fetch("/v1/models", { headers: { authorization: `Bearer ${key}` } })
    .then((r) => (r.ok ? (r.json() as Promise<{ models?: { name: string }[] }>) : null))
    .then((body) => {
      if (!body || !Array.isArray(body.models)) return;
      clear(models);
      for (const m of body.models) models.appendChild(el("option", { value: m.name }));
    })
    // A key without scope `manage` may not list models; the name is then typed.
    .catch(() => undefined);
}
keyInput.addEventListener("change", () => {
  store(keyStore, STORE_KEY, keyInput.value.trim());
  loadModels();
});
loadModels();

function num(id: string): number | undefined {
  const v = byId(id, HTMLInputElement).value.trim();
  return v === "" ? undefined : Number(v);
}

function send(msg: Record<string, unknown>): void {
  if (socket && socket.ws.readyState === WebSocket.OPEN) socket.ws.send(JSON.stringify(msg));
}

function onEvent(ev: StreamEvent): void {
  if (!current || ev.id !== current) return;
  switch (ev.type) {
    case "progress": {
      let text: string = ev.stage;
      if (ev.stage === "queued" && ev.position) text = `queued (position ${ev.position})`;
      if (ev.stage === "loading") {
        text = `loading the model ${ev.percent || 0}% (${ev.bytes || 0} of ${ev.total || 0} bytes)`;
        bar(ev.percent || 0);
      }
      if (ev.stage === "running") {
        text = "running";
        bar(100);
      }
      status(text);
      note(`${sinceStart()}  ${text}`);
      return;
    }
    case "token": {
      tokens++;
      if (tokens === 1) {
        firstAt = performance.now();
        byId("ttft").textContent = ms(firstAt - startedAt);
        status("streaming");
      }
      const span = el("span", { class: "tok", text: ev.text_output });
      output.appendChild(span);
      // Highlighted as it arrives, then fades (a CSS transition on the class).
      setTimeout(() => (span.className = "tok old"), 50);
      byId("count").textContent = String(tokens);
      // Tell the edge what was read, so the node may run ahead by the window and no further.
      if (tokens % ACK_EVERY === 0) send({ type: "ack", id: current, tokens });
      return;
    }
    case "done": {
      const secs = (performance.now() - (firstAt || startedAt)) / 1000;
      byId("rate").textContent = tokens > 1 && secs > 0 ? `${(tokens / secs).toFixed(1)} tok/s` : "-";
      status(`done: ${ev.finish_reason}, ${ev.tokens} tokens, ${ev.prompt_tokens} prompt tokens, region ${ev.region || "-"}, node ${ev.node || "-"}`);
      note(`${sinceStart()}  done (${ev.finish_reason})`);
      current = null;
      setState("done");
      return;
    }
    case "error":
      status(`${ev.code}: ${ev.error}`, true);
      note(`error ${ev.code}`);
      current = null;
      setState("error");
  }
}

/** Opens the stream socket for this model and key (or reuses the open one), then `then`. */
function connect(model: string, key: string, then: () => void): void {
  if (socket && socket.ws.readyState === WebSocket.OPEN && socket.model === model && socket.key === key) return then();
  socket?.ws.close();
  const url = `${location.protocol === "https:" ? "wss://" : "ws://"}${location.host}/v2/models/${encodeURIComponent(model)}/stream`;
  const mine: MeshSocket = { ws: new WebSocket(url, ["mesh.v1", `mesh.key.${key}`]), model, key };
  socket = mine;
  mine.ws.onopen = then;
  mine.ws.onmessage = (e: MessageEvent) => {
    try {
      onEvent(JSON.parse(String(e.data)) as StreamEvent);
    } catch (err) {
      status(`bad event: ${String(err)}`, true);
    }
  };
  mine.ws.onclose = (e: CloseEvent) => {
    if (socket === mine) socket = null;
    if (current) {
      status(`the socket closed (${e.code}): check the key and the model name`, true);
      current = null;
      setState("error");
    }
  };
}

byId("go").addEventListener("click", () => {
  const key = keyInput.value.trim();
  const model = modelInput.value.trim();
  if (!key || !model) {
    status("enter a key and a model", true);
    return;
  }
  store(keyStore, STORE_KEY, key);
  store(prefStore, STORE_MODEL, model);
  const prompt = byId("prompt", HTMLTextAreaElement).value;
  clear(output);
  clear(events);
  output.appendChild(el("span", { class: "prompt", text: prompt }));
  tokens = 0;
  firstAt = 0;
  bar(0);
  for (const id of ["count", "ttft", "rate"]) byId(id).textContent = "-";
  setState("connecting");
  status("connecting");
  startedAt = performance.now();
  connect(model, key, () => {
    current = `p${++seq}`;
    const parameters: Record<string, number> = {};
    for (const name of ["max_tokens", "temperature", "top_k", "seed"]) {
      const v = num(name);
      if (v !== undefined) parameters[name] = v;
    }
    setState("streaming");
    status("sent");
    send({ type: "generate", id: current, text_input: prompt, parameters, window: WINDOW });
  });
});
byId("stop").addEventListener("click", () => {
  if (current) send({ type: "cancel", id: current });
});
setState("idle");
