// protocol/plaintext.ts: which hosts count as this machine (plain HTTP / ws:// allowed without
// MESH_LOCAL=1). Pure logic; the parts that apply it are tested in tls.test.ts.

import { describe, expect, it } from "vitest";
import { isLoopbackHost, plaintextAllowed } from "../protocol/plaintext.js";

describe("isLoopbackHost", () => {
  it("takes loopback addresses and names", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "127.255.255.255", "::1", "[::1]", "::ffff:127.0.0.1", "localhost", "LOCALHOST", "api.localhost"]) {
      expect(isLoopbackHost(h), h).toBe(true);
    }
  });

  it("refuses everything else, look-alikes included", () => {
    for (const h of ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "127.0.0.256", "127.0.0.1.evil.example", "localhost.evil.example", "router.internal", "", "[::2]"]) {
      expect(isLoopbackHost(h), h).toBe(false);
    }
  });

  it("local mode allows any host", () => {
    expect(plaintextAllowed("10.0.0.1", true)).toBe(true);
    expect(plaintextAllowed("10.0.0.1", false)).toBe(false);
  });
});
