// The wire protocol's version and its optional features, and what two parts agree on. Edge,
// routers and nodes are deployed one at a time (a Worker everywhere in seconds, routers and
// nodes one by one), so any two of them may be of different releases; each says which versions
// it speaks and which features it takes when a socket or a call opens, and each sender uses a
// feature only when its peer announced it. Where each announcement travels:
//   node -> router: the `hello` frame's `wire`; router -> node: the `welcome` frame's `wire`
//   edge -> router: the `x-mesh-wire` header on the stream socket's upgrade, on each streamed
//     generation's request and on each call (a router refuses what shares no version with it);
//   router -> edge: the same header on the upgrade's answer (101), where frames flow both ways
//     (an HTTP answer carries no batch, so it needs none).
// A part that announces nothing is from before versions: wire 1, no features (LEGACY_WIRE).
// Two parts whose version ranges do not overlap refuse each other with the stable code
// `wire_version_unsupported` (close code 4426 on a socket, HTTP 426 on a call), both ranges
// in the message. An announcement is a capability, never an authority: every frame is still
// checked by its own schema and carries its own grant. Worker-safe (zod only).

import { z } from "zod";
import { ConfigError, type Field } from "./config-schema.js";

/**
 * The newest wire version this build speaks. 1: the frames as they were before versions (no
 * announcement, every frame its own message); 2: announcements, `batch` where announced.
 */
export const WIRE_VERSION = 2;
/** The oldest wire version this build still speaks; raised only once no part speaks less (docs/operating.md). */
export const MIN_WIRE_VERSION = 1;

/**
 * Optional features, by name. A part takes (receives) exactly what it announces, and sends a
 * feature's frames only to a peer that announced it.
 *   batch: several frames in one socket message (`{t:"batch", frames}`, protocol/frame-batch.ts).
 */
export const WIRE_FEATURES = ["batch"] as const;
export type WireFeature = (typeof WIRE_FEATURES)[number];

/** The stable code of a refusal for want of a common version (an ErrorCode, and a socket close's reason). */
export const WIRE_REFUSAL = "wire_version_unsupported";
/** The request and response header that carries an announcement between edge and router. */
export const WIRE_HEADER = "x-mesh-wire";

/** Bounds on an announcement: it is read from a peer before anything else is known of it. */
const MAX_VERSION = 65_535;
const MAX_FEATURES = 16;
const FEATURE_NAME = /^[a-z0-9_-]{1,32}$/;
const MAX_HEADER_CHARS = 256;

/**
 * What one part says it speaks: versions `min`..`max` and the features it takes. Unknown
 * feature names (a newer peer's) are kept as announced and simply never agreed on.
 */
export const wireAnnouncementSchema = z
  .object(
    {
      min: z.number({ error: "'wire.min' must be an integer from 1 to 65535" }).int().min(1).max(MAX_VERSION),
      max: z.number({ error: "'wire.max' must be an integer from 1 to 65535" }).int().min(1).max(MAX_VERSION),
      features: z
        .array(z.string({ error: "'wire.features' must be short lowercase names" }).regex(FEATURE_NAME, { error: "'wire.features' must be short lowercase names" }), {
          error: `'wire.features' must be an array of at most ${MAX_FEATURES}`,
        })
        .max(MAX_FEATURES, { error: `'wire.features' must be an array of at most ${MAX_FEATURES}` }),
    },
    { error: "wire must be a map" },
  )
  .refine((w) => w.min <= w.max, { error: "'wire.min' must not be above 'wire.max'" });
export type WireAnnouncement = z.infer<typeof wireAnnouncementSchema>;

/** What a part from before versions speaks (it announces nothing). */
export const LEGACY_WIRE: WireAnnouncement = Object.freeze({ min: 1, max: 1, features: [] as string[] });

/** This build's announcement, taking `features` (default: every one it knows). */
export function localWire(features: readonly WireFeature[] = WIRE_FEATURES): WireAnnouncement {
  return { min: MIN_WIRE_VERSION, max: WIRE_VERSION, features: [...features] };
}

/** What two parts agreed on: the version both speak (the newest such) and the features both take. */
export interface WireAgreement {
  version: number;
  features: ReadonlySet<WireFeature>;
  /** The peer's announcement (LEGACY_WIRE when it sent none): for logs and reports. */
  peer: WireAnnouncement;
}

/** What a peer from before versions gets: wire 1, no features. */
export const LEGACY_AGREEMENT: WireAgreement = Object.freeze({ version: 1, features: new Set<WireFeature>(), peer: LEGACY_WIRE });

export type Negotiation = ({ ok: true } & WireAgreement) | { ok: false; peer: WireAnnouncement; message: string };

/** `min-max` as the messages write a range. */
export const formatRange = (w: WireAnnouncement) => (w.min === w.max ? String(w.min) : `${w.min}-${w.max}`);

/**
 * What `local` and `peer` (undefined: announced nothing, a part from before versions) can use
 * together, or the refusal when their ranges do not overlap. `who` names the two sides in the
 * refusal (kept under a close reason's 123 bytes).
 */
export function negotiate(local: WireAnnouncement, peer: WireAnnouncement | undefined, who: { local: string; peer: string } = { local: "this part", peer: "peer" }): Negotiation {
  const p = peer ?? LEGACY_WIRE;
  const version = Math.min(local.max, p.max);
  if (version < Math.max(local.min, p.min)) {
    return { ok: false, peer: p, message: `${WIRE_REFUSAL}: ${who.peer} speaks wire ${formatRange(p)}, ${who.local} ${formatRange(local)}` };
  }
  const features = new Set<WireFeature>();
  for (const f of WIRE_FEATURES) if (local.features.includes(f) && p.features.includes(f)) features.add(f);
  return { ok: true, version, features, peer: p };
}

/** An announcement as the header writes it: `1-2;batch` (versions, then features by comma). */
export function formatWireHeader(w: WireAnnouncement): string {
  return `${w.min}-${w.max};${w.features.join(",")}`;
}

/**
 * The header's announcement: undefined when there is none (a part from before versions);
 * throws WireHeaderError for a malformed one (bounded before it is split).
 */
export function parseWireHeader(value: string | null | undefined): WireAnnouncement | undefined {
  if (value === null || value === undefined) return undefined;
  if (value.length > MAX_HEADER_CHARS) throw new WireHeaderError(`${WIRE_HEADER} is longer than ${MAX_HEADER_CHARS} characters`);
  const m = /^\s*(\d{1,5})-(\d{1,5})\s*(?:;\s*([^;]*))?$/.exec(value);
  if (!m) throw new WireHeaderError(`${WIRE_HEADER} must read like '1-2;batch'`);
  const features = (m[3] ?? "").split(",").map((f) => f.trim()).filter((f) => f !== "");
  const r = wireAnnouncementSchema.safeParse({ min: Number(m[1]), max: Number(m[2]), features });
  if (!r.success) throw new WireHeaderError(`${WIRE_HEADER}: ${r.error.issues[0]?.message ?? "invalid"}`);
  return r.data;
}

export class WireHeaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WireHeaderError";
  }
}

/**
 * The setting MESH_WIRE_FEATURES (every part): the features this part announces and takes,
 * comma-separated; unset: all of WIRE_FEATURES; `none`: none, so the part sends and takes
 * frames one by one as a part from before them does (to rule a feature out on one hop, or to
 * stand in for an old part in tests).
 */
export const wireFeaturesSetting: Field<readonly WireFeature[]> = {
  compute: (env) => {
    const v = env.MESH_WIRE_FEATURES;
    if (typeof v !== "string" || v.trim() === "") return WIRE_FEATURES;
    if (v.trim().toLowerCase() === "none") return [];
    const names = v.split(",").map((f) => f.trim().toLowerCase()).filter((f) => f !== "");
    for (const n of names) {
      if (!(WIRE_FEATURES as readonly string[]).includes(n)) throw new ConfigError(`MESH_WIRE_FEATURES must be none or names among ${WIRE_FEATURES.join(", ")} (got '${n}')`);
    }
    return [...new Set(names)] as WireFeature[];
  },
};

/**
 * What a router reports of a connected node (its region report, GET /v1/regions, the status
 * page): the range and features the node announced (LEGACY_WIRE for a node from before
 * versions), and the version and features the two agreed on. Operators rolling an upgrade read
 * which node speaks what here instead of in the router's log.
 */
export interface ReportedWire extends WireAnnouncement {
  /** The version the router and the node use. */
  version: number;
  /** The features both take. */
  agreed: WireFeature[];
}

export function reportedWire(a: WireAgreement): ReportedWire {
  return { min: a.peer.min, max: a.peer.max, features: [...a.peer.features], version: a.version, agreed: [...a.features] };
}

/**
 * A node's reported wire as read back from a region report (Redis: a router of any release
 * wrote it), checked like an announcement from a peer: null when absent (a router from before
 * this report) or malformed. Unknown agreed features (a newer router's) are kept, bounded.
 */
export function parseReportedWire(v: unknown): ReportedWire | null {
  if (typeof v !== "object" || v === null) return null;
  const { version, agreed } = v as { version?: unknown; agreed?: unknown };
  const announced = wireAnnouncementSchema.safeParse(v);
  if (!announced.success || !Number.isInteger(version) || (version as number) < announced.data.min || (version as number) > announced.data.max) return null;
  const features = wireAnnouncementSchema.safeParse({ min: 1, max: 1, features: agreed });
  if (!features.success) return null;
  return { ...announced.data, version: version as number, agreed: features.data.features as WireFeature[] };
}
