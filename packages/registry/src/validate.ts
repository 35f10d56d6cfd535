// Checks that need more than one object (duplicates, conflicting ServiceEntries, dangling subsets), and the
// file walk behind `vmpilot validate`.
import { readFile, readdir, realpath, stat } from "node:fs/promises";
import { extname, join } from "node:path";
import type { Destination, VirtualServiceSpec } from "./api.js";
import { configKey, type AnyConfig, type ConfigObject, type ConfigProblem, type Origin } from "./model.js";
import { MAX_FILE_BYTES, parseDocuments } from "./parse/index.js";
import { positionOf } from "./parse/locate.js";

/** Cross-object checks over the merged objects of all files. */
export function crossValidate(objects: readonly AnyConfig[]): ConfigProblem[] {
  return [...duplicateObjects(objects), ...serviceEntryConflicts(objects), ...danglingSubsets(objects)];
}

/**
 * Deterministic precedence when two ServiceEntries in one namespace claim the same host+port: negative if `a` wins.
 *
 * Istio picks the oldest object (creationTimestamp). Files have no trustworthy creation time (a fresh clone
 * touches everything), so vmpilot orders by namespace, then metadata.name, then origin (file path, line, column).
 * This depends only on the config itself, never on the order files happen to be read or change, so every replica
 * and every restart picks the same winner, and renaming an object is the explicit way to change it.
 */
export function compareServiceEntryPrecedence(a: ConfigObject<"ServiceEntry">, b: ConfigObject<"ServiceEntry">): number {
  return (
    cmp(a.metadata.namespace, b.metadata.namespace) ||
    cmp(a.metadata.name, b.metadata.name) ||
    compareOrigins(a.origin, b.origin)
  );
}

/** Orders origins by file path, line and column (other origins after files, by their JSON form). */
export function compareOrigins(a: Origin, b: Origin): number {
  if (a.type === "file" && b.type === "file") return cmp(a.file, b.file) || a.line - b.line || a.column - b.column;
  if (a.type === "file") return -1;
  if (b.type === "file") return 1;
  return cmp(JSON.stringify(a), JSON.stringify(b));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function formatOrigin(o: Origin): string {
  switch (o.type) {
    case "file":
      return `${o.file}:${o.line}:${o.column}`;
    case "consul":
      return `consul ${o.datacenter}/${o.service}`;
    case "auto-registered":
      return `auto-registered ${o.namespace}/${o.group} (${o.proxyId})`;
  }
}

function at(o: AnyConfig, message: string, severity: "error" | "warning", where?: { line: number; column: number }, field?: string): ConfigProblem {
  const file = o.origin.type === "file" ? o.origin.file : formatOrigin(o.origin);
  const line = where?.line ?? (o.origin.type === "file" ? o.origin.line : 1);
  const column = where?.column ?? (o.origin.type === "file" ? o.origin.column : 1);
  return {
    severity,
    message,
    file,
    line,
    column,
    kind: o.kind,
    name: o.metadata.name,
    namespace: o.metadata.namespace,
    ...(field ? { field } : {}),
  };
}

/** The same Kind/namespace/name defined twice: the first by origin wins, every later one is an error. */
function duplicateObjects(objects: readonly AnyConfig[]): ConfigProblem[] {
  const byKey = new Map<string, AnyConfig[]>();
  for (const o of objects) {
    const k = configKey(o);
    const list = byKey.get(k);
    if (list) list.push(o);
    else byKey.set(k, [o]);
  }
  const out: ConfigProblem[] = [];
  for (const [key, list] of byKey) {
    if (list.length < 2) continue;
    const sorted = [...list].sort((a, b) => compareOrigins(a.origin, b.origin));
    for (const dup of sorted.slice(1)) {
      out.push(at(dup, `${key} is already defined at ${formatOrigin(sorted[0]!.origin)}; names must be unique per kind and namespace`, "error"));
    }
  }
  return out;
}

/** Two ServiceEntries in one namespace claiming one host on one port: the loser's claim is ignored, so warn on it. */
function serviceEntryConflicts(objects: readonly AnyConfig[]): ConfigProblem[] {
  const claimants = new Map<string, ConfigObject<"ServiceEntry">[]>();
  for (const o of objects) {
    if (o.kind !== "ServiceEntry") continue;
    for (const k of hostClaimKeys(o)) {
      const list = claimants.get(k);
      if (list) list.push(o);
      else claimants.set(k, [o]);
    }
  }
  const out: ConfigProblem[] = [];
  for (const [k, list] of claimants) if (list.length > 1) out.push(...hostConflicts(k, list));
  return out;
}

/**
 * `namespace NUL lowercased-host` for every host a ServiceEntry declares: the groups within which host+port
 * conflicts are decided (hostConflicts), so an incremental build re-checks only the groups an edit touches.
 */
export function hostClaimKeys(se: ConfigObject<"ServiceEntry">): string[] {
  return [...new Set(se.spec.hosts.map((h) => `${se.metadata.namespace}\u0000${h.toLowerCase()}`))];
}

/** The host+port conflict warnings among the ServiceEntries of one claim group (see hostClaimKeys). */
export function hostConflicts(claimKey: string, entries: readonly ConfigObject<"ServiceEntry">[]): ConfigProblem[] {
  const [ns, host] = claimKey.split("\u0000") as [string, string];
  const claims = new Map<number, ConfigObject<"ServiceEntry">[]>();
  for (const o of entries) {
    for (const p of o.spec.ports ?? []) {
      const list = claims.get(p.number);
      if (list) list.push(o);
      else claims.set(p.number, [o]);
    }
  }
  const out: ConfigProblem[] = [];
  const reported = new Set<string>();
  for (const list of claims.values()) {
    if (list.length < 2) continue;
    const sorted = [...list].sort(compareServiceEntryPrecedence);
    const winner = sorted[0]!;
    for (const loser of sorted.slice(1)) {
      if (loser === winner) continue;
      const once = `${configKey(loser)}|${configKey(winner)}`;
      if (reported.has(once)) continue; // one warning per host naming every shared port, not one per port
      reported.add(once);
      const shared = sharedPorts(loser, winner);
      const ports = `${shared.length === 1 ? "port" : "ports"} ${shared.join(", ")}`;
      const hostIndex = loser.spec.hosts.findIndex((h) => h.toLowerCase() === host);
      const where = positionOf(loser.spec.hosts, hostIndex);
      out.push(
        at(
          loser,
          `ServiceEntry ${ns}/${loser.metadata.name} (${formatOrigin(loser.origin)}) and ServiceEntry ${ns}/${winner.metadata.name} (${formatOrigin(winner.origin)}) both claim host '${host}' on ${ports}; '${winner.metadata.name}' wins (precedence: name, then file), this one is ignored for that host and port`,
          "warning",
          where,
          `spec.hosts[${hostIndex}]`,
        ),
      );
    }
  }
  return out;
}

function sharedPorts(a: ConfigObject<"ServiceEntry">, b: ConfigObject<"ServiceEntry">): number[] {
  const theirs = new Set((b.spec.ports ?? []).map((p) => p.number));
  return (a.spec.ports ?? []).map((p) => p.number).filter((n) => theirs.has(n)).sort((x, y) => x - y);
}

/** Whether a DestinationRule host (exact, `*.suffix` or `*`) applies to a destination host; case-insensitive. */
export function hostMatches(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase();
  const h = host.toLowerCase();
  if (p === h) return true;
  if (p === "*") return true;
  return p.startsWith("*.") && h.endsWith(p.slice(1)) && h.length > p.length - 1;
}

function exportedTo(exportTo: readonly string[] | undefined, owner: string, viewer: string): boolean {
  if (!exportTo || exportTo.length === 0) return true;
  return exportTo.some((e) => e === "*" || e === viewer || (e === "." && owner === viewer));
}

/**
 * A VirtualService routing to a subset no visible DestinationRule defines sends that traffic nowhere (Envoy has
 * no such cluster). The host itself need not be a ServiceEntry host (it may come from Consul), so only subsets
 * are checked.
 */
function danglingSubsets(objects: readonly AnyConfig[]): ConfigProblem[] {
  const rules = objects.filter((o): o is ConfigObject<"DestinationRule"> => o.kind === "DestinationRule");
  const out: ConfigProblem[] = [];
  for (const vs of objects) if (vs.kind === "VirtualService") out.push(...danglingSubsetsOf(vs, () => rules));
  return out;
}

/**
 * The dangling-subset warnings of one VirtualService. `candidates(host)` returns, in config key order, at least
 * every DestinationRule whose host may match `host` (the whole list will do; an index does it faster).
 */
export function danglingSubsetsOf(
  vs: ConfigObject<"VirtualService">,
  candidates: (host: string) => readonly ConfigObject<"DestinationRule">[],
): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  for (const { dest, field } of destinations(vs.spec)) {
    if (dest.subset === undefined) continue;
    const visible = candidates(dest.host).filter((dr) => hostMatches(dr.spec.host, dest.host) && exportedTo(dr.spec.exportTo, dr.metadata.namespace, vs.metadata.namespace));
    if (visible.some((dr) => dr.spec.subsets?.some((s) => s.name === dest.subset))) continue;
    const known = visible.map((dr) => `${dr.metadata.namespace}/${dr.metadata.name} defines ${(dr.spec.subsets ?? []).map((s) => s.name).join(", ") || "no subsets"}`);
    out.push(
      at(
        vs,
        `subset '${dest.subset}' of host '${dest.host}' is not defined by any DestinationRule visible from namespace '${vs.metadata.namespace}'${known.length ? ` (${known.join("; ")})` : ""}; requests routed to it will fail`,
        "warning",
        positionOf(dest, "subset"),
        `${field}.subset`,
      ),
    );
  }
  return out;
}

/** Lowercased hosts a VirtualService routes to a named subset of: the DestinationRules it depends on. */
export function subsetDestinationHosts(vs: ConfigObject<"VirtualService">): string[] {
  const hosts = new Set<string>();
  for (const { dest } of destinations(vs.spec)) if (dest.subset !== undefined) hosts.add(dest.host.toLowerCase());
  return [...hosts];
}

function* destinations(spec: VirtualServiceSpec): Generator<{ dest: Destination; field: string }> {
  for (const [i, h] of (spec.http ?? []).entries()) {
    for (const [j, r] of (h.route ?? []).entries()) yield { dest: r.destination, field: `spec.http[${i}].route[${j}].destination` };
    if (h.mirror) yield { dest: h.mirror, field: `spec.http[${i}].mirror` };
  }
  for (const [i, t] of (spec.tls ?? []).entries()) {
    for (const [j, r] of (t.route ?? []).entries()) yield { dest: r.destination, field: `spec.tls[${i}].route[${j}].destination` };
  }
  for (const [i, t] of (spec.tcp ?? []).entries()) {
    for (const [j, r] of (t.route ?? []).entries()) yield { dest: r.destination, field: `spec.tcp[${i}].route[${j}].destination` };
  }
}

const CONFIG_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);

/**
 * Config files under `dir`, sorted, recursively. Hidden entries are skipped, which also reads a Kubernetes
 * ConfigMap mount (`..data` symlink swaps) exactly once through its visible symlinks.
 */
async function configFiles(dir: string, seen: Set<string>): Promise<string[]> {
  const real = await realpath(dir);
  if (seen.has(real)) return []; // symlink loop
  seen.add(real);
  const entries = (await readdir(dir)).filter((e) => !e.startsWith(".")).sort();
  const out: string[] = [];
  for (const e of entries) {
    const p = join(dir, e);
    let st;
    try {
      st = await stat(p);
    } catch {
      continue; // dangling symlink
    }
    if (st.isDirectory()) out.push(...(await configFiles(p, seen)));
    else if (st.isFile() && CONFIG_EXTENSIONS.has(extname(e).toLowerCase())) out.push(p);
  }
  return out;
}

/** Reads and parses one file; I/O failures become problems on the file. */
export async function parseFile(file: string): Promise<{ objects: AnyConfig[]; problems: ConfigProblem[] }> {
  try {
    const st = await stat(file);
    if (st.size > MAX_FILE_BYTES) {
      return { objects: [], problems: [{ severity: "error", file, line: 1, column: 1, message: `file is larger than ${MAX_FILE_BYTES / 1024 / 1024} MiB; split it up` }] };
    }
    return parseDocuments(file, await readFile(file, "utf8"));
  } catch (e) {
    return { objects: [], problems: [{ severity: "error", file, line: 1, column: 1, message: ioMessage(e) }] };
  }
}

function ioMessage(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code === "ENOENT") return "no such file or directory";
  if (err.code === "EACCES") return "permission denied";
  return err.message ?? String(e);
}

/**
 * Problems by file and position, then by every other field: a total order, so the sorted list does not depend
 * on the order checks ran or sources reported in (the incremental build re-checks only part of the config).
 */
export function compareProblems(a: ConfigProblem, b: ConfigProblem): number {
  return (
    cmp(a.file, b.file) ||
    a.line - b.line ||
    a.column - b.column ||
    cmp(a.severity, b.severity) ||
    cmp(a.message, b.message) ||
    cmp(a.field ?? "", b.field ?? "") ||
    cmp(a.kind ?? "", b.kind ?? "") ||
    cmp(a.namespace ?? "", b.namespace ?? "") ||
    cmp(a.name ?? "", b.name ?? "")
  );
}

/** Walks files/directories (recursively; .yaml/.yml/.json), parses, validates, cross-validates. */
export async function validatePaths(paths: string[]): Promise<{ objects: AnyConfig[]; problems: ConfigProblem[]; files: number }> {
  const objects: AnyConfig[] = [];
  const problems: ConfigProblem[] = [];
  const files: string[] = [];
  const seenDirs = new Set<string>();
  for (const p of paths) {
    try {
      const st = await stat(p);
      if (st.isDirectory()) {
        if (seenDirs.has(await realpath(p))) continue; // the same directory named twice
        const found = await configFiles(p, seenDirs);
        if (found.length === 0) problems.push({ severity: "warning", file: p, line: 1, column: 1, message: "no .yaml, .yml or .json files found in this directory" });
        files.push(...found);
      }
      else files.push(p); // named explicitly: read whatever its extension
    } catch (e) {
      problems.push({ severity: "error", file: p, line: 1, column: 1, message: ioMessage(e) });
    }
  }
  const unique = [...new Set(files)];
  for (const f of unique) {
    const r = await parseFile(f);
    objects.push(...r.objects);
    problems.push(...r.problems);
  }
  problems.push(...crossValidate(objects));
  problems.sort(compareProblems);
  return { objects, problems, files: unique.length };
}
