// What the three browser pages share: building elements (createElement and textContent only,
// never innerHTML, so a name from the API cannot inject markup; the CSP's Trusted Types rule
// would refuse an HTML string anyway), finding the page's fixed elements, and the API-key rules
// (the key lives in sessionStorage, this tab only, and never comes from the URL).

type AttrValue = string | number | boolean | null | undefined;
export type Attrs = Record<string, AttrValue>;
export type Kid = Node | string | number | null | undefined | false | Kid[];

const SVGNS = "http://www.w3.org/2000/svg";

/** Sets attributes (`text`: the text content; `style`: through CSSOM, as the CSP refuses style attributes) and appends children. */
function build<T extends Element>(node: T, attrs: Attrs | null | undefined, kids?: Kid): T {
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "style" && (node instanceof HTMLElement || node instanceof SVGElement)) node.style.cssText = String(v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
  }
  add(node, kids);
  return node;
}

/** Appends children: nodes as they are, strings and numbers as text. */
export function add(node: Node, kids: Kid | undefined): void {
  if (kids === null || kids === undefined || kids === false) return;
  if (Array.isArray(kids)) {
    for (const k of kids) add(node, k);
    return;
  }
  node.appendChild(typeof kids === "string" || typeof kids === "number" ? document.createTextNode(String(kids)) : kids);
}

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, kids?: Kid): HTMLElementTagNameMap[K] {
  return build(document.createElement(tag), attrs, kids);
}

export function sv<K extends keyof SVGElementTagNameMap>(tag: K, attrs?: Attrs | null, kids?: Kid): SVGElementTagNameMap[K] {
  return build(document.createElementNS(SVGNS, tag), attrs, kids);
}

export function clear(node: Node): void {
  while (node.firstChild) node.removeChild(node.firstChild);
}

/** The page's element with this id, of the type the page's HTML gives it; a missing one is a bug in the page. */
export function byId<T extends HTMLElement | SVGElement = HTMLElement>(id: string, type?: new () => T): T {
  const found = document.getElementById(id);
  if (!found || (type && !(found instanceof type))) throw new Error(`the page has no ${type ? type.name + " " : ""}#${id}`);
  return found as unknown as T;
}

/** Storage that may be disabled (private modes, policies; even naming it can throw): reads give null, writes do nothing. */
export function load(area: () => Storage, name: string): string | null {
  try {
    return area().getItem(name);
  } catch {
    return null;
  }
}
export function store(area: () => Storage, name: string, value: string | null): void {
  try {
    const a = area();
    if (value === null) a.removeItem(name);
    else a.setItem(name, value);
  } catch {
    // storage disabled
  }
}

/**
 * Keys do not travel in URLs (they end up in logs, history and Referer headers): a `?key=` in
 * the address is never used, only taken out of the address bar and history. Also drops a key an
 * older version of the page kept in localStorage under `storeName`. Returns the other parameters.
 */
export function scrubKeyFromUrl(storeName: string): URLSearchParams {
  const params = new URLSearchParams(location.search);
  if (params.has("key")) {
    params.delete("key");
    const rest = params.toString();
    try {
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    } catch {
      // ignore
    }
  }
  store(() => localStorage, storeName, null);
  return params;
}
