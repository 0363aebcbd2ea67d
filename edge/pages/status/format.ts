// How the status page writes numbers, durations, shares and clock times.

const nf = new Intl.NumberFormat();

export const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
export const fmtInt = (v: number | null | undefined): string => (isNum(v) ? nf.format(Math.round(v)) : "—");
export const fmtNumber = (v: number): string => nf.format(v);

/** Milliseconds; "—" when nothing was measured. */
export function fmtMs(v: number, count: number): string {
  if (count === 0 || !isNum(v)) return "—";
  return v < 10 ? v.toFixed(1) : nf.format(Math.round(v));
}

export function fmtAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} days`;
}

export function fmtPct(errors: number, count: number): string {
  if (!count) return "—";
  const p = (errors / count) * 100;
  if (p === 0) return "0%";
  if (p < 0.01) return "<0.01%";
  return `${p < 1 ? p.toFixed(2) : p.toFixed(1)}%`;
}

export function fmtMb(mb: number): string {
  return mb >= 1024 ? `${(mb / 1024).toFixed(1)} GB` : `${Math.round(mb)} MB`;
}

export function fmtClock(t: number, seconds: boolean): string {
  const o: Intl.DateTimeFormatOptions = { hour: "2-digit", minute: "2-digit", hour12: false };
  if (seconds) o.second = "2-digit";
  return new Date(t).toLocaleTimeString([], o);
}
