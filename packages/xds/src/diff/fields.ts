// Field-level difference of two proto3 JSON values, as a reviewer wants to read it:
// `virtual_hosts[0].routes[1].route.weighted_clusters.clusters[0].weight: 80 -> 70`.
//
// Lists of named things (virtual hosts, routes, weighted clusters, filter chains) and of endpoints are matched
// by identity rather than position, so inserting one route reports one added route instead of every later
// route "changed" into its neighbour. Paths still use positions (the new list's, or the old one's for a
// removed element), because that is what `config_dump` and the protos show.

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface FieldChange {
  path: string;
  /** Absent: the field was added. */
  old?: Json;
  /** Absent: the field was removed. */
  new?: Json;
  /** An added or removed list element's identity (its name, or an endpoint's `address:port`): what a reader needs of it. */
  element?: string;
}

function isObject(v: unknown): v is { [k: string]: Json } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Deep equality of JSON values; object key order does not matter. */
export function jsonEqual(a: Json | undefined, b: Json | undefined): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  if (isObject(a)) {
    if (!isObject(b)) return false;
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    return ka.every((k) => k in b && jsonEqual(a[k], b[k]));
  }
  return false;
}

/**
 * What identifies a list element across two versions: its `name`, else an endpoint's address and port, else
 * a locality. Undefined when the element has none of these (the list is then compared by position).
 */
function identity(v: Json): string | undefined {
  if (!isObject(v)) return undefined;
  if (typeof v.name === "string") return `name:${v.name}`;
  const sa = socketAddress(v);
  if (sa) return `addr:${sa}`;
  if (isObject(v.locality)) return `locality:${canonical(v.locality)}`;
  return undefined;
}

/** `lb_endpoints[]` entries: `endpoint.address.socket_address` or `.pipe`. */
function socketAddress(v: { [k: string]: Json }): string | undefined {
  const ep = v.endpoint;
  if (!isObject(ep) || !isObject(ep.address)) return undefined;
  const sa = ep.address.socket_address;
  if (isObject(sa)) return `${String(sa.address)}:${String(sa.port_value ?? sa.named_port ?? "")}`;
  const pipe = ep.address.pipe;
  if (isObject(pipe)) return `pipe:${String(pipe.path)}`;
  return undefined;
}

/** JSON with sorted keys, so equal values print equally. */
export function canonical(v: Json | undefined): string {
  return JSON.stringify(sortKeys(v));
}

function sortKeys(v: Json | undefined): Json | undefined {
  if (Array.isArray(v)) return v.map((x) => sortKeys(x) as Json);
  if (isObject(v)) {
    const out: { [k: string]: Json } = {};
    for (const k of Object.keys(v).sort()) out[k] = sortKeys(v[k]) as Json;
    return out;
  }
  return v;
}

/** Keys per element when every element of both lists has one and none repeats; else undefined. */
function keyedLists(a: Json[], b: Json[]): [string[], string[]] | undefined {
  const ka: string[] = [];
  const kb: string[] = [];
  for (const [list, keys] of [
    [a, ka],
    [b, kb],
  ] as const) {
    for (const el of list) {
      const k = identity(el);
      if (k === undefined) return undefined;
      keys.push(k);
    }
    if (new Set(keys).size !== keys.length) return undefined;
  }
  return [ka, kb];
}

function fieldPath(base: string, key: string): string {
  // Keys like `@type` or ones with dots would make a dotted path ambiguous.
  const plain = /^[A-Za-z_][A-Za-z0-9_]*$/.test(key);
  if (plain) return base ? `${base}.${key}` : key;
  return `${base}[${JSON.stringify(key)}]`;
}

/** Every difference between `a` and `b`, depth first, in the order the fields appear (old's order, then new keys). */
export function diffFields(a: Json | undefined, b: Json | undefined, path = ""): FieldChange[] {
  const out: FieldChange[] = [];
  walk(a, b, path, out);
  return out;
}

function walk(a: Json | undefined, b: Json | undefined, path: string, out: FieldChange[]): void {
  if (jsonEqual(a, b)) return;
  if (a === undefined) return void out.push({ path, new: b as Json });
  if (b === undefined) return void out.push({ path, old: a });
  if (isObject(a) && isObject(b)) {
    const keys = [...Object.keys(a), ...Object.keys(b).filter((k) => !(k in a))];
    for (const k of keys) walk(a[k], b[k], fieldPath(path, k), out);
    return;
  }
  if (Array.isArray(a) && Array.isArray(b)) return walkList(a, b, path, out);
  out.push({ path, old: a, new: b });
}

function walkList(a: Json[], b: Json[], path: string, out: FieldChange[]): void {
  const keyed = keyedLists(a, b);
  if (!keyed) {
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n; i++) walk(a[i], b[i], `${path}[${i}]`, out);
    return;
  }
  const [ka, kb] = keyed;
  const newIndex = new Map(kb.map((k, i) => [k, i]));
  const oldIndex = new Map(ka.map((k, i) => [k, i]));
  // Removed elements first (at their old positions), then the new list in order: changed or added.
  for (const [i, k] of ka.entries()) if (!newIndex.has(k)) out.push({ path: `${path}[${i}]`, old: a[i]!, element: label(k) });
  for (const [j, k] of kb.entries()) {
    const i = oldIndex.get(k);
    if (i === undefined) out.push({ path: `${path}[${j}]`, new: b[j]!, element: label(k) });
    else walk(a[i], b[j], `${path}[${j}]`, out);
  }
  // Same elements, other order: matters to Envoy (routes are first-match), so say so once.
  const common = kb.filter((k) => oldIndex.has(k));
  const oldOrder = ka.filter((k) => newIndex.has(k));
  if (common.some((k, i) => k !== oldOrder[i])) {
    out.push({ path: `${path}(order)`, old: oldOrder.map(label), new: common.map(label) });
  }
}

function label(key: string): string {
  return key.slice(key.indexOf(":") + 1);
}

/** A value on one line, shortened past `max` characters. */
export function formatValue(v: Json | undefined, max = 100): string {
  if (v === undefined) return "(none)";
  const s = typeof v === "string" ? v : canonical(v);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** `path: old -> new`; a list element added or removed as `path: added NAME` / `path: removed NAME`. */
export function formatFieldChange(c: FieldChange, max = 100): string {
  if (c.element !== undefined) return `${c.path}: ${c.old === undefined ? "added" : "removed"} ${c.element}`;
  return `${c.path || "(whole resource)"}: ${formatValue(c.old, max)} -> ${formatValue(c.new, max)}`;
}
