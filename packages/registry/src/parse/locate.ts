// Source positions. The parser builds plain JS values from YAML nodes; it records, for every object and array it
// builds, where the value and each of its members came from. Later checks (cross-object validation, the registry)
// can then point at the exact field of an object without carrying YAML nodes around.
import type { LineCounter } from "yaml";

export interface Position {
  line: number;
  column: number;
}

interface Recorded {
  /** Position of the value itself (the mapping or sequence). */
  self: Position;
  /** Member key (object key or array index) -> position of the member's value. */
  values: Map<string | number, Position>;
  /** Object key -> position of the key. */
  keys: Map<string, Position>;
  /** Dotted path from the document root, e.g. `spec.ports[1]`. */
  path: string;
}

const recorded = new WeakMap<object, Recorded>();

export function recordPosition(value: object, self: Position, path: string): Recorded {
  const r: Recorded = { self, values: new Map(), keys: new Map(), path };
  recorded.set(value, r);
  return r;
}

/**
 * Where `value[member]` was written (its value, or its key with `{ key: true }`); without `member`, where `value`
 * itself starts. Undefined for values the parser did not build (e.g. objects cloned after parsing).
 */
export function positionOf(value: object, member?: string | number, opts: { key?: boolean } = {}): Position | undefined {
  const r = recorded.get(value);
  if (!r) return undefined;
  if (member === undefined) return r.self;
  if (opts.key && typeof member === "string") return r.keys.get(member) ?? r.values.get(member) ?? r.self;
  return r.values.get(member) ?? r.self;
}

/** Dotted path of `value` (plus `member`) from the document root, e.g. `spec.ports[1].number`. */
export function pathOf(value: object, member?: string | number): string | undefined {
  const r = recorded.get(value);
  if (!r) return undefined;
  return joinPath(r.path, member);
}

export function joinPath(base: string, member?: string | number): string {
  if (member === undefined) return base;
  if (typeof member === "number") return `${base}[${member}]`;
  const seg = /^[A-Za-z_][A-Za-z0-9_]*$/.test(member) ? member : JSON.stringify(member);
  return base ? `${base}.${seg}` : seg;
}

/** 1-based line/column of a character offset. */
export function offsetPosition(lc: LineCounter, offset: number): Position {
  const { line, col } = lc.linePos(Math.max(0, offset));
  return { line, column: col };
}

/**
 * For "only one of" rules: of several keys set on `value`, the one written last (the extra one to point at);
 * undefined when fewer than two are set, so the problem is reported at `value` itself.
 */
export function extraKey(value: object, keys: readonly string[]): string | undefined {
  if (keys.length < 2) return undefined;
  const at = (k: string) => positionOf(value, k, { key: true }) ?? { line: 0, column: 0 };
  return [...keys].sort((a, b) => at(b).line - at(a).line || at(b).column - at(a).column)[0];
}
