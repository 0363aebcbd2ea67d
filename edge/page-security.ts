// The headers of the edge's HTML pages (/status, /playground, /docs) and of their script and
// style files. Those pages take an API key, so a script injected into them, or a frame around
// them, could take the key. Each page is static HTML whose script and stylesheet are files from
// this origin (edge/pages/, built by scripts/build-pages.ts), so the Content-Security-Policy
// allows no inline script or style at all, no eval, and scripts and styles from this origin only;
// Trusted Types are required with no policy allowed, so no HTML string can reach innerHTML or
// the like even from the page's own code (it builds elements with createElement/textContent).
// Fetches and sockets go only to this origin, no form posts anywhere (a key form that ran
// without its script would put the key in a URL), and no site may frame the page
// (clickjacking). No Node-only code: it runs in the Worker, and imports nothing of the Worker's
// (the page tests serve the built pages with these same headers).

/** The Content-Security-Policy of every page. */
export const PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  // The favicon is `data:,` (no request for one).
  "img-src data:",
  // Same origin only; 'self' covers ws:/wss: to this host (the playground's stream socket).
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join("; ");

/** Every header an HTML page of ours is served with. */
export function pageSecurityHeaders(): Record<string, string> {
  return {
    "content-type": "text/html; charset=UTF-8",
    "content-security-policy": PAGE_CSP,
    // For browsers that predate frame-ancestors.
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    // The page names its files by content hash; the HTML itself is always fetched fresh, so a
    // deploy reaches every reader on the next load.
    "cache-control": "no-store",
  };
}

/** The headers of a page's script or stylesheet: named by content hash, so cacheable for good. */
export function pageFileHeaders(name: string): Record<string, string> {
  return {
    "content-type": name.endsWith(".css") ? "text/css; charset=UTF-8" : "text/javascript; charset=UTF-8",
    // nosniff: a browser runs it as script or applies it as style only with exactly that type.
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "public, max-age=31536000, immutable",
  };
}
