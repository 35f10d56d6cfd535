// Applying an iptables plan to this host: the only impure part of traffic capture. Requires root and the
// iptables-restore binary; anything else is a clear error rather than a half-applied rule set.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { removalFromSaved, renderRemovalRestore, renderRestore, type CaptureRemoval, type IptablesPlan } from "./iptables.js";

export class IptablesApplyError extends Error {}

/** Absolute path of `name` on PATH, or undefined. */
export function findOnPath(name: string, envPath = process.env.PATH ?? ""): string | undefined {
  if (name.includes("/")) return fs.existsSync(name) ? name : undefined;
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function applyPlan(plan: IptablesPlan): void {
  const restore = requireRestore("applying");
  // Jumps into our chains from the built-in chains survive a re-apply; do not add them twice.
  const existing = new Set<string>();
  const save = findOnPath("iptables-save");
  if (save) {
    const r = spawnSync(save, ["-t", plan.table], { encoding: "utf8" });
    if (r.status === 0) for (const line of r.stdout.split("\n")) existing.add(line.trim());
  }
  runRestore(restore, renderRestore(plan, existing));
}

/**
 * Takes every capture rule and chain of ours off the host, whatever settings installed them, in one
 * transaction; returns what was removed (nothing when capture was not installed, which is not an error).
 */
export function removeCapture(): CaptureRemoval {
  const restore = requireRestore("removing");
  const save = findOnPath("iptables-save");
  if (!save) throw new IptablesApplyError("iptables-save not found on PATH; it is needed to see which rules are installed");
  const saved = spawnSync(save, ["-t", "nat"], { encoding: "utf8" });
  if (saved.error || saved.status !== 0) throw new IptablesApplyError(`iptables-save failed: ${saved.error?.message ?? saved.stderr.trim()}`);
  const removal = removalFromSaved(saved.stdout);
  if (removal.jumps.length > 0 || removal.chains.length > 0) runRestore(restore, renderRemovalRestore(removal));
  return removal;
}

function requireRestore(what: string): string {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    throw new IptablesApplyError(`${what} iptables rules needs root; run as root, or use --dry-run to print them`);
  }
  const restore = findOnPath("iptables-restore");
  if (!restore) throw new IptablesApplyError("iptables-restore not found on PATH; install iptables, or use --dry-run to print the rules");
  return restore;
}

function runRestore(restore: string, input: string): void {
  const r = spawnSync(restore, ["--noflush"], { input, encoding: "utf8" });
  if (r.error) throw new IptablesApplyError(`iptables-restore failed to run: ${r.error.message}`);
  if (r.status !== 0) throw new IptablesApplyError(`iptables-restore exited with ${r.status}: ${r.stderr.trim()}`);
}
