// `vmpilot diff` output. Text for a reviewer (and a pull-request comment): per group of proxy views with the
// same outcome, which resources are added (+), removed (-) or changed (~) and, for changed ones, each field as
// `path: old -> new`. JSON carries the same with every field, for tools.
import type { ConfigDiff, DiffGroup } from "./compare.js";
import { formatFieldChange, type FieldChange } from "./fields.js";
import type { ResourceChange } from "./resources.js";
import type { DiffView } from "./views.js";

export interface Side {
  dir: string;
  revision?: string;
}

export interface ReportOptions {
  /** Field lines shown per changed resource before "... N more" (text only). */
  maxFields?: number;
  /** Characters of a value shown before it is cut (text only). */
  maxValue?: number;
}

const MARK = { added: "+", removed: "-", changed: "~" } as const;

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

function namespaces(views: readonly DiffView[]): string[] {
  return [...new Set(views.map((v) => v.view.namespace))].sort();
}

function sideLine(tag: string, s: Side): string {
  return `${tag} ${s.dir}${s.revision ? ` (git ${s.revision.slice(0, 12)})` : ""}`;
}

function viewLine(v: DiffView): string {
  const what = v.represents.filter((r) => r !== "--proxy");
  const explicit = v.represents.includes("--proxy") ? " [--proxy]" : "";
  return `${v.label}${what.length ? `: ${what.join(", ")}` : ""}${explicit}`;
}

function countSummary(changes: readonly ResourceChange[]): string {
  const n = { added: 0, removed: 0, changed: 0 };
  for (const c of changes) n[c.action]++;
  return (["changed", "added", "removed"] as const)
    .filter((a) => n[a] > 0)
    .map((a) => `${n[a]} ${a}`)
    .join(", ");
}

export function formatText(diff: ConfigDiff, before: Side, after: Side, opts: ReportOptions = {}): string {
  const maxFields = opts.maxFields ?? 20;
  const maxValue = opts.maxValue ?? 100;
  const lines: string[] = [sideLine("---", before), sideLine("+++", after)];
  const changed = diff.groups.flatMap((g) => g.views);
  const total = changed.length + diff.unchanged.length;
  if (changed.length === 0) {
    lines.push(`no change for any of ${plural(total, "proxy view")} (namespaces ${namespaces(diff.unchanged).join(", ") || "none"})`);
    return `${lines.join("\n")}\n`;
  }
  lines.push(`${changed.length} of ${plural(total, "proxy view")} change, in namespaces ${namespaces(changed).join(", ")}`);
  for (const g of diff.groups) lines.push("", ...groupLines(g, maxFields, maxValue));
  if (diff.unchanged.length > 0) {
    lines.push("", `unchanged: ${plural(diff.unchanged.length, "proxy view")} (namespaces ${namespaces(diff.unchanged).join(", ")})`);
  }
  return `${lines.join("\n")}\n`;
}

function groupLines(g: DiffGroup, maxFields: number, maxValue: number): string[] {
  const out = [`${plural(g.views.length, "proxy view")} in ${namespaces(g.views).length === 1 ? "namespace" : "namespaces"} ${namespaces(g.views).join(", ")}: ${countSummary(g.changes)} ${g.changes.length === 1 ? "resource" : "resources"}`];
  for (const v of g.views) out.push(`    ${viewLine(v)}`);
  for (const c of g.changes) {
    out.push(`  ${MARK[c.action]} ${c.type} ${c.name}${c.action === "changed" ? "" : ` ${c.action}`}`);
    const fields: FieldChange[] = c.fields ?? [];
    for (const f of fields.slice(0, maxFields)) out.push(`      ${formatFieldChange(f, maxValue)}`);
    if (fields.length > maxFields) out.push(`      ... ${plural(fields.length - maxFields, "more field")} (--output json shows all)`);
  }
  return out;
}

function viewJson(v: DiffView) {
  return {
    label: v.label,
    kind: v.view.kind,
    namespace: v.view.namespace,
    labels: v.view.labels,
    ...(v.view.serviceAccount ? { serviceAccount: v.view.serviceAccount } : {}),
    ...(v.view.ips.length ? { ips: v.view.ips } : {}),
    represents: v.represents,
  };
}

export function jsonReport(diff: ConfigDiff, before: Side, after: Side): unknown {
  return {
    old: before,
    new: after,
    changed: diff.groups.length > 0,
    groups: diff.groups.map((g) => ({ proxies: g.views.map(viewJson), changes: g.changes })),
    unchanged: diff.unchanged.map(viewJson),
  };
}
