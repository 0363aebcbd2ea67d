// Wire-protocol versions (protocol/wire-version.ts) as pure logic: what two announcements agree
// on (the newest common version, the features both take, a part from before versions as wire 1
// with none), the refusal when ranges do not overlap (the stable code and both ranges), the
// header's format and its bounds, the announcement's schema inside hello and welcome, the
// setting, and the senders' fallback: a FrameBatcher to a peer that did not announce `batch`
// sends every frame alone, and a receiver that did not announce it refuses a batch.

import { describe, expect, it } from "vitest";
import { createCodec } from "../protocol/codec.js";
import { value } from "../protocol/config-schema.js";
import { FrameBatcher } from "../protocol/frame-batch.js";
import { MessageError, parseNodeMessage, parseRegionToEdge, parseRouterMessage, unbatch, type RegionToEdge } from "../protocol/messages.js";
import {
  formatWireHeader,
  LEGACY_WIRE,
  localWire,
  MIN_WIRE_VERSION,
  negotiate,
  parseWireHeader,
  WIRE_FEATURES,
  WIRE_REFUSAL,
  WIRE_VERSION,
  WireHeaderError,
  wireFeaturesSetting,
} from "../protocol/wire-version.js";
import { nodeHello } from "./helpers/fakes.js";

const codec = createCodec();
const token = (sid: string, i: number): RegionToEdge => ({ t: "token", sid, i, text: "x", id: i });

describe("negotiate", () => {
  it("two parts of this build: the newest version, every feature", () => {
    const a = negotiate(localWire(), localWire());
    expect(a).toMatchObject({ ok: true, version: WIRE_VERSION });
    expect(a.ok && [...a.features]).toEqual([...WIRE_FEATURES]);
  });

  it("a peer that announced nothing is a part from before versions: wire 1, no batch", () => {
    const a = negotiate(localWire(), undefined);
    expect(a).toMatchObject({ ok: true, version: 1, peer: LEGACY_WIRE });
    expect(a.ok && a.features.size).toBe(0);
  });

  it("a feature only one side announced is off (either side)", () => {
    const a = negotiate(localWire([]), localWire());
    const b = negotiate(localWire(), localWire([]));
    expect(a.ok && a.features.has("batch")).toBe(false);
    expect(b.ok && b.features.has("batch")).toBe(false);
  });

  it("a newer peer: the newest version both speak; its unknown features are never agreed on", () => {
    const a = negotiate(localWire(), { min: 1, max: WIRE_VERSION + 3, features: ["batch", "zstd-frames"] });
    expect(a).toMatchObject({ ok: true, version: WIRE_VERSION });
    expect(a.ok && [...a.features]).toEqual(["batch"]);
  });

  it("no version in common either way: refused with the stable code and both ranges", () => {
    const newer = negotiate(localWire(), { min: WIRE_VERSION + 1, max: WIRE_VERSION + 2, features: ["batch"] }, { local: "router", peer: "node" });
    expect(newer.ok).toBe(false);
    expect(!newer.ok && newer.message).toBe(`${WIRE_REFUSAL}: node speaks wire ${WIRE_VERSION + 1}-${WIRE_VERSION + 2}, router ${MIN_WIRE_VERSION}-${WIRE_VERSION}`);
    // A part that dropped wire 1 refuses one from before versions.
    const older = negotiate({ min: 2, max: 3, features: [] }, undefined, { local: "region", peer: "edge" });
    expect(!older.ok && older.message).toBe(`${WIRE_REFUSAL}: edge speaks wire 1, region 2-3`);
    // Under a WebSocket close reason's 123 bytes.
    expect(new TextEncoder().encode(!newer.ok ? newer.message : "").length).toBeLessThanOrEqual(123);
  });
});

describe("the x-mesh-wire header", () => {
  it("round-trips an announcement; absent is undefined (a part from before versions)", () => {
    expect(formatWireHeader(localWire())).toBe(`${MIN_WIRE_VERSION}-${WIRE_VERSION};batch`);
    expect(parseWireHeader(formatWireHeader(localWire()))).toEqual(localWire());
    expect(parseWireHeader(formatWireHeader(localWire([])))).toEqual(localWire([]));
    expect(parseWireHeader(" 2-5 ; batch, zstd-frames ")).toEqual({ min: 2, max: 5, features: ["batch", "zstd-frames"] });
    expect(parseWireHeader(null)).toBeUndefined();
    expect(parseWireHeader(undefined)).toBeUndefined();
  });

  it("refuses a malformed or unbounded one", () => {
    const bad = [
      "",
      "2",
      "two-three",
      "3-2;batch", // min above max
      "0-2", // no version 0
      "1-99999999", // digits bounded
      "1-70000",
      "1-2;Batch",
      "1-2;a b",
      `1-2;${Array.from({ length: 17 }, (_, i) => `f${i}`).join(",")}`, // more than 16 features
      `1-2;${"a".repeat(33)}`,
      `1-2;${"a,".repeat(200)}`, // over 256 characters
    ];
    for (const v of bad) expect(() => parseWireHeader(v), v).toThrow(WireHeaderError);
  });
});

describe("announcements in hello and welcome are checked like every field", () => {
  const hello = nodeHello("n1");

  it("present, absent (a node from before versions), or null", () => {
    expect(parseNodeMessage({ ...hello, wire: localWire() })).toMatchObject({ wire: localWire() });
    expect(parseNodeMessage(hello)).not.toHaveProperty("wire");
    expect(parseNodeMessage({ ...hello, wire: null })).not.toHaveProperty("wire");
    expect(parseRouterMessage({ t: "welcome", region: "r", wire: { min: 1, max: 9, features: ["batch", "later"] } })).toEqual({ t: "welcome", region: "r", wire: { min: 1, max: 9, features: ["batch", "later"] } });
    expect(parseRouterMessage({ t: "welcome", region: "r" })).toEqual({ t: "welcome", region: "r" });
  });

  it("bounded and well-formed, or the frame is refused", () => {
    const refused = (wire: unknown) => {
      try {
        parseNodeMessage({ ...hello, wire });
        return null;
      } catch (err) {
        expect(err).toBeInstanceOf(MessageError);
        return (err as Error).message;
      }
    };
    expect(refused({ min: 2, max: 1, features: [] })).toMatch(/'wire.min' must not be above/);
    expect(refused({ min: 0, max: 1, features: [] })).toMatch(/'wire.min'/);
    expect(refused({ min: 1, max: 2 ** 40, features: [] })).toMatch(/'wire.max'/);
    expect(refused({ min: 1, max: 2, features: new Array(17).fill("batch") })).toMatch(/at most 16/);
    expect(refused({ min: 1, max: 2, features: ["x".repeat(1000)] })).toMatch(/short lowercase names/);
    expect(refused({ min: 1, max: 2 })).toMatch(/'wire.features'|features/);
    expect(refused("1-2;batch")).toMatch(/wire must be a map/);
  });
});

describe("MESH_WIRE_FEATURES", () => {
  const read = (v?: string) => value(wireFeaturesSetting, v === undefined ? {} : { MESH_WIRE_FEATURES: v });
  it("all by default, none, a list; an unknown name is a configuration error", () => {
    expect(read()).toEqual([...WIRE_FEATURES]);
    expect(read("")).toEqual([...WIRE_FEATURES]);
    expect(read("none")).toEqual([]);
    expect(read(" Batch ,batch")).toEqual(["batch"]);
    expect(() => read("batch,turbo")).toThrow(/MESH_WIRE_FEATURES must be none or names among batch \(got 'turbo'\)/);
  });
});

describe("senders fall back to one frame per message for a peer that did not announce batch", () => {
  function batcher() {
    const sent: unknown[] = [];
    const turns: (() => void)[] = [];
    const b = new FrameBatcher<RegionToEdge>(codec.encode, (bytes) => sent.push(codec.decode(bytes)), (f) => turns.push(f));
    const run = () => {
      for (const f of turns.splice(0)) f();
    };
    return { b, sent, run, turns };
  }

  it("not batching (the default): each frame leaves at once, alone, in order", () => {
    const { b, sent, turns } = batcher();
    b.push(token("a", 0));
    b.push(token("b", 0));
    b.sendNow({ t: "pong" });
    b.push(token("a", 1));
    expect(turns).toHaveLength(0); // nothing waits for the turn's end
    expect(sent).toEqual([token("a", 0), token("b", 0), { t: "pong" }, token("a", 1)]);
    // Every message is a plain frame a part from before batches reads.
    for (const m of sent) expect(unbatch(m, parseRegionToEdge, false)).toHaveLength(1);
  });

  it("batching once the peer announced it; frames queued when it is switched off still leave one by one, in order", () => {
    const { b, sent, run } = batcher();
    b.batching = true;
    b.push(token("a", 0));
    b.push(token("a", 1));
    run();
    expect(sent).toHaveLength(1);
    expect((sent[0] as { t: string }).t).toBe("batch");
    b.push(token("a", 2));
    b.push(token("a", 3));
    b.batching = false;
    run();
    expect(sent.slice(1)).toEqual([token("a", 2), token("a", 3)]);
  });

  it("a receiver that did not announce batch refuses one as the unknown frame type it is to an old part", () => {
    const batch = { t: "batch", frames: [token("a", 0), token("a", 1)] };
    expect(unbatch(batch, parseRegionToEdge)).toHaveLength(2);
    expect(() => unbatch(batch, parseRegionToEdge, false)).toThrow(/unknown frame type "batch"/);
    expect(unbatch(token("a", 0), parseRegionToEdge, false)).toEqual([token("a", 0)]);
  });
});
