// HTTP Range requests as the artifact routes serve them (pure: the Worker serves ranges, Node
// tests check the parsing without pulling in the Worker's bindings).

/**
 * The bytes one `Range` header asks of an object of `size` bytes: null to send it all (no header,
 * or one this route does not serve, such as several ranges: RFC 9110 lets a server ignore it),
 * "unsatisfiable" when the range starts past the end.
 */
export function parseRange(header: string | null, size: number): { offset: number; length: number } | "unsatisfiable" | null {
  const m = header ? /^bytes=(\d*)-(\d*)$/.exec(header.trim()) : null;
  if (!m || (m[1] === "" && m[2] === "")) return null;
  if (m[1] === "") {
    // bytes=-N: the last N bytes.
    const n = Math.min(Number(m[2]), size);
    return n > 0 ? { offset: size - n, length: n } : "unsatisfiable";
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== "" && Number(m[2]) < start) return null;
  if (start >= size) return "unsatisfiable";
  return { offset: start, length: end - start + 1 };
}
