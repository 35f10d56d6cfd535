// Which xDS resources one proxy view would gain, lose or see changed between two configs.
import { diffFields, jsonEqual, type FieldChange, type Json } from "./fields.js";

/** What the generators produce for one proxy view: resource name -> proto3 JSON, per xDS type. */
export interface GeneratedResources {
  listeners: ReadonlyMap<string, unknown>;
  routes: ReadonlyMap<string, unknown>;
  clusters: ReadonlyMap<string, unknown>;
  endpoints: ReadonlyMap<string, unknown>;
}

export type ResourceType = "cluster" | "endpoints" | "listener" | "route";

/** In the order a proxy applies them (CDS, EDS, LDS, RDS: make before break), which is also the order to read them. */
export const RESOURCE_TYPES: readonly { type: ResourceType; field: keyof GeneratedResources; xds: string }[] = [
  { type: "cluster", field: "clusters", xds: "CDS" },
  { type: "endpoints", field: "endpoints", xds: "EDS" },
  { type: "listener", field: "listeners", xds: "LDS" },
  { type: "route", field: "routes", xds: "RDS" },
];

export type ResourceAction = "added" | "removed" | "changed";

export interface ResourceChange {
  type: ResourceType;
  name: string;
  action: ResourceAction;
  /** For `changed`: every field that differs. */
  fields?: FieldChange[];
}

function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function diffResources(before: GeneratedResources, after: GeneratedResources): ResourceChange[] {
  const out: ResourceChange[] = [];
  for (const { type, field } of RESOURCE_TYPES) {
    const a = before[field];
    const b = after[field];
    const names = [...new Set([...a.keys(), ...b.keys()])].sort(compareNames);
    for (const name of names) {
      const x = a.get(name) as Json | undefined;
      const y = b.get(name) as Json | undefined;
      if (x === undefined) out.push({ type, name, action: "added" });
      else if (y === undefined) out.push({ type, name, action: "removed" });
      else if (!jsonEqual(x, y)) out.push({ type, name, action: "changed", fields: diffFields(x, y) });
    }
  }
  return out;
}
