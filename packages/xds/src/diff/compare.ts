// Two configs, a set of proxy views, the generators: per view what changes, then views with the same outcome
// grouped, so the result reads as a blast radius (which proxies, which resources, what).
import type { RegistrySnapshot } from "@vmpilot/registry";
import type { ProxyView } from "../proxy-view.js";
import { canonical, type Json } from "./fields.js";
import { diffResources, type GeneratedResources, type ResourceChange } from "./resources.js";
import type { DiffView } from "./views.js";

export type Generate = (snapshot: RegistrySnapshot, view: ProxyView) => GeneratedResources;

export interface DiffGroup {
  views: DiffView[];
  changes: ResourceChange[];
}

export interface ConfigDiff {
  /** Views whose resources change, grouped by identical outcome; the largest groups first. */
  groups: DiffGroup[];
  unchanged: DiffView[];
}

/** Generation failed for one view in one of the configs (a generator bug or a config it cannot express). */
export class GenerateError extends Error {
  constructor(
    readonly side: "old" | "new",
    readonly view: DiffView,
    cause: unknown,
  ) {
    super(`generating the ${side} config for ${view.label} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = "GenerateError";
  }
}

export function compareConfigs(before: RegistrySnapshot, after: RegistrySnapshot, views: readonly DiffView[], generate: Generate): ConfigDiff {
  const byOutcome = new Map<string, DiffGroup>();
  const unchanged: DiffView[] = [];
  for (const v of views) {
    const a = run(generate, before, v, "old");
    const b = run(generate, after, v, "new");
    const changes = diffResources(a, b);
    if (changes.length === 0) {
      unchanged.push(v);
      continue;
    }
    const key = canonical(changes as unknown as Json);
    const group = byOutcome.get(key);
    if (group) group.views.push(v);
    else byOutcome.set(key, { views: [v], changes });
  }
  // Stable: by size (the widest blast radius first), then by first appearance.
  const groups = [...byOutcome.values()].map((g, i) => ({ g, i })).sort((x, y) => y.g.views.length - x.g.views.length || x.i - y.i).map(({ g }) => g);
  return { groups, unchanged };
}

function run(generate: Generate, snap: RegistrySnapshot, v: DiffView, side: "old" | "new"): GeneratedResources {
  try {
    return generate(snap, v.view);
  } catch (err) {
    throw new GenerateError(side, v, err);
  }
}
