// Durations as Istio accepts them in YAML: Go's time.ParseDuration syntax ("300ms", "1.5s", "1m30s", "2h45m"),
// restricted to what makes sense for config: no sign, and at least one unit unless the value is exactly "0".

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3, // U+00B5 micro sign, as Go accepts
  "μs": 1e-3, // U+03BC greek mu, as Go accepts
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

const SEGMENT = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/** Go/Istio duration ("1s", "500ms", "1.5s", "1m30s", "1h") -> milliseconds; undefined if invalid. */
export function parseDuration(s: string): number | undefined {
  if (typeof s !== "string" || s.length === 0 || s.length > 64) return undefined;
  if (s === "0") return 0;
  let total = 0;
  SEGMENT.lastIndex = 0;
  while (SEGMENT.lastIndex < s.length) {
    const start = SEGMENT.lastIndex;
    const m = SEGMENT.exec(s);
    if (!m || m.index !== start) return undefined;
    const [, num, unit] = m as unknown as [string, string, string];
    total += Number(num) * UNIT_MS[unit]!;
  }
  return Number.isFinite(total) ? total : undefined;
}

/** Formats milliseconds the way operators write them ("1.5s", "250ms"); used in messages. */
export function formatDuration(ms: number): string {
  if (ms !== 0 && ms % 1000 !== 0) return `${ms}ms`;
  return `${ms / 1000}s`;
}
