// Istio durations (validated by the registry's parser) -> proto3 JSON durations ("3723.500s").
import { parseDuration } from "@vmpilot/registry";

export function durationMs(d: string): number {
  const ms = parseDuration(d);
  if (ms === undefined) throw new Error(`invalid duration ${JSON.stringify(d)} (the parser should have rejected it)`);
  return ms;
}

/** Milliseconds -> proto3 JSON duration with millisecond precision. */
export function msToJson(ms: number): string {
  const whole = Math.floor(ms / 1000);
  const frac = Math.round(ms - whole * 1000);
  return frac === 0 ? `${whole}s` : `${whole}.${String(frac).padStart(3, "0")}s`;
}

export function durationJson(d: string): string {
  return msToJson(durationMs(d));
}
