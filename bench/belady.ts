// The offline optimum the Zipf placement replay (bench/zipf-placement.ts) compares the mesh
// with: Belady's rule, which knows the future. The cluster is one pool of `places` model-sized
// memory places (every model is the same size and may go on any node, as pickWarm treats the
// nodes). On a call to a model not warm, a load of it begins; with no free place, the warm model
// whose next call is farthest in the future (or never comes) is evicted. A load holds its place
// for `loadMs` before the model is warm; calls arriving meanwhile wait for it, and when every
// place is taken by a load, the model waits (in call order) for the next load to finish.
//
// With instant loads this is Belady's MIN, which provably makes the fewest loads and so the
// most warm hits; with load times it is the same rule with the same costs the mesh pays. Slots
// and service time are not modelled: a warm hit only asks that the model was warm on arrival.
// Pure and deterministic: unit-tested in test/belady.test.ts on traces with a known optimum.

export interface Request {
  /** Arrival time (ms; any origin, non-decreasing). */
  at: number;
  model: number;
}

export interface BeladyOptions {
  /** Models the cluster's memory holds at once (loads included). */
  places: number;
  /** Time a load takes before the model is warm (ms). */
  loadMs: number;
  /** Calls and loads are counted from this time on (earlier ones warm the cache up). */
  countFrom?: number;
  /** ... and before this time. */
  countUntil?: number;
}

export interface BeladyResult {
  /** Calls counted. */
  calls: number;
  /** Calls whose model was warm when they arrived. */
  warmHits: number;
  /** Calls that waited for a load (or for a place to load in). */
  waitedForLoad: number;
  /** Loads begun (counted window). */
  coldStarts: number;
  /** Warm models evicted (counted window). */
  evictions: number;
  /** Loads begun over the whole trace. */
  coldStartsTotal: number;
}

/** Replays `requests` (sorted by time) under Belady's rule. */
export function beladyReplay(requests: readonly Request[], opts: BeladyOptions): BeladyResult {
  if (!(opts.places >= 1)) throw new Error("places must be at least 1");
  const countFrom = opts.countFrom ?? -Infinity;
  const countUntil = opts.countUntil ?? Infinity;
  const counted = (t: number) => t >= countFrom && t < countUntil;
  const n = requests.length;

  // When each model is next called, seen from each request: the next request of its model.
  const nextAt = new Float64Array(n);
  const lastSeen = new Map<number, number>();
  for (let i = n - 1; i >= 0; i--) {
    const m = requests[i]!.model;
    nextAt[i] = lastSeen.get(m) ?? Infinity;
    lastSeen.set(m, requests[i]!.at);
  }
  /** Per model, the time of its next call not yet replayed (Infinity: none). */
  const nextCall = new Map<number, number>();
  for (const [m, t] of lastSeen) nextCall.set(m, t);

  const warm = new Set<number>();
  /** Loads running: model -> time the model becomes warm, in start order (= finish order). */
  const loading = new Map<number, number>();
  /** Models waiting for a place, in the order their first call came. */
  const waiting: number[] = [];
  const waitingSet = new Set<number>();
  const r: BeladyResult = { calls: 0, warmHits: 0, waitedForLoad: 0, coldStarts: 0, evictions: 0, coldStartsTotal: 0 };

  const begin = (model: number, now: number) => {
    loading.set(model, now + opts.loadMs);
    r.coldStartsTotal++;
    if (counted(now)) r.coldStarts++;
  };
  /** Starts the load of `model` if a place is free or a warm model can go; false otherwise. */
  const tryLoad = (model: number, now: number): boolean => {
    if (warm.size + loading.size >= opts.places) {
      let victim = -1;
      let farthest = -Infinity;
      for (const w of warm) {
        const t = nextCall.get(w) ?? Infinity;
        if (t > farthest || (t === farthest && w < victim)) {
          farthest = t;
          victim = w;
        }
      }
      if (victim < 0) return false; // every place holds a load
      warm.delete(victim);
      if (counted(now)) r.evictions++;
    }
    begin(model, now);
    return true;
  };
  /** Loads that finish by `now` make their models warm, and free places for waiting models. */
  const finishLoads = (now: number) => {
    for (;;) {
      let first: number | undefined;
      let firstAt = Infinity;
      for (const [m, t] of loading) {
        if (t < firstAt) {
          firstAt = t;
          first = m;
        }
      }
      if (first === undefined || firstAt > now) return;
      loading.delete(first);
      warm.add(first);
      while (waiting.length > 0 && tryLoad(waiting[0]!, firstAt)) waitingSet.delete(waiting.shift()!);
    }
  };

  for (let i = 0; i < n; i++) {
    const { at, model } = requests[i]!;
    finishLoads(at); // a load finishing exactly now serves this call warm
    nextCall.set(model, nextAt[i]!);
    const isCounted = counted(at);
    if (isCounted) r.calls++;
    if (warm.has(model)) {
      if (isCounted) r.warmHits++;
      continue;
    }
    if (isCounted) r.waitedForLoad++;
    if (loading.has(model) || waitingSet.has(model)) continue;
    if (!tryLoad(model, at)) {
      waiting.push(model);
      waitingSet.add(model);
    }
  }
  return r;
}
