// The headers of the edge's HTML pages (/status, /playground, /docs). Those pages take an API
// key, so a script injected into them, or a frame around them, could take the key: the
// Content-Security-Policy lets only this response's own inline script and style run (a fresh
// nonce per response, so a nonce seen once is worth nothing), fetches and sockets go only to
// this origin, no form posts anywhere (a key form that ran without its script would put the key
// in a URL), and no site may frame the page (clickjacking). No Node-only code: it runs in the
// Worker, and imports nothing of the Worker's (the page tests serve pages with these headers).

/** 128 random bits, base64: a CSP nonce for one response. */
export function newNonce(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
}

/** Every header an HTML page of ours is served with; `nonce` marks its inline script and style. */
export function pageSecurityHeaders(nonce: string): Record<string, string> {
  return {
    "content-security-policy": [
      "default-src 'none'",
      `script-src 'nonce-${nonce}'`,
      `style-src 'nonce-${nonce}'`,
      // The favicon is `data:,` (no request for one).
      "img-src data:",
      // Same origin only; 'self' covers ws:/wss: to this host (the playground's stream socket).
      "connect-src 'self'",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join("; "),
    // For browsers that predate frame-ancestors.
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
  };
}

/** A page rendered with a fresh nonce, under the headers above. */
export function htmlPage(render: (nonce: string) => string): Response {
  const nonce = newNonce();
  return new Response(render(nonce), { headers: { "content-type": "text/html; charset=UTF-8", ...pageSecurityHeaders(nonce) } });
}
