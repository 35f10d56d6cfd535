// `vmpilot diff OLD_DIR NEW_DIR [--proxy [KIND:]NS[/LABELS]]... [--config FILE] [--output text|json]`: what a
// config change would do to the proxies, before it is merged. Both directories are loaded as the server would
// load them, the generators run for each proxy view on both, and the report lists per group of proxies the
// xDS resources added, removed or changed, with each changed field.
//
// Exit codes follow diff(1): 0 no difference, 1 differences, 2 trouble (a config with errors, a bad flag).
import { Command, Option } from "commander";
import { DEFAULT_MESH, type MeshConfig } from "@vmpilot/registry";
import { generate } from "../generators/index.js";
import { loadServerConfig } from "../server/config.js";
import { compareConfigs, GenerateError, type Generate } from "../diff/compare.js";
import { loadConfigDir, type LoadedConfig } from "../diff/load.js";
import { formatText, jsonReport } from "../diff/report.js";
import { defaultViews, mergeViews, parseProxySpec, type DiffView } from "../diff/views.js";
import { formatProblem, type Output } from "./validate.js";

export interface DiffOptions {
  proxy: string[];
  defaultProxies: boolean;
  config?: string;
  output: "text" | "json";
}

export interface DiffOutputs {
  out: Output;
  err: Output;
}

/** Runs the comparison and prints the report; returns the exit code (0 same, 1 different, 2 error). */
export async function runDiff(oldDir: string, newDir: string, opts: DiffOptions, io: DiffOutputs, gen: Generate = generate): Promise<number> {
  let explicit: DiffView[];
  let mesh: MeshConfig = DEFAULT_MESH;
  try {
    explicit = opts.proxy.map(parseProxySpec);
    if (opts.config) mesh = (await loadServerConfig({ config: opts.config })).mesh;
  } catch (err) {
    // A malformed --proxy or an unreadable server config file.
    io.err.write(`vmpilot diff: ${(err as Error).message}\n`);
    return 2;
  }

  const [before, after] = await Promise.all([loadConfigDir(oldDir, mesh), loadConfigDir(newDir, mesh)]);
  if (reportProblems(before, io.err) + reportProblems(after, io.err) > 0) {
    io.err.write("vmpilot diff: not comparing: fix the errors above first (`vmpilot validate` checks a directory)\n");
    return 2;
  }

  const views = mergeViews([...(opts.defaultProxies ? defaultViews(before.snapshot, after.snapshot) : []), ...explicit]);
  if (views.length === 0) {
    io.err.write("vmpilot diff: no proxy views to compare (the configs are empty and no --proxy was given)\n");
    return 2;
  }
  let diff;
  try {
    diff = compareConfigs(before.snapshot, after.snapshot, views, gen);
  } catch (err) {
    if (!(err instanceof GenerateError)) throw err;
    io.err.write(`vmpilot diff: ${err.message}\n`);
    return 2;
  }
  const sides = [side(before), side(after)] as const;
  if (opts.output === "json") io.out.write(`${JSON.stringify(jsonReport(diff, ...sides), null, 2)}\n`);
  else io.out.write(formatText(diff, ...sides));
  return diff.groups.length > 0 ? 1 : 0;
}

function side(c: LoadedConfig): { dir: string; revision?: string } {
  return { dir: c.dir, ...(c.revision ? { revision: c.revision } : {}) };
}

/** Prints a config's problems as `vmpilot validate` does (warnings too, for context); returns the error count. */
function reportProblems(c: LoadedConfig, err: Output): number {
  let errors = 0;
  for (const p of c.problems) {
    if (p.severity === "error") errors++;
    err.write(`${formatProblem(p)}\n`);
  }
  return errors;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function register(program: Command): void {
  program
    .command("diff")
    .description(
      "show which proxies' xDS resources a config change adds, removes or changes, and how (exit 0: no difference, 1: differences, 2: errors)",
    )
    .argument("<old-dir>", "config directory before the change (e.g. a worktree of the base branch)")
    .argument("<new-dir>", "config directory after the change")
    .option(
      "-p, --proxy <[kind:]ns[/labels]>",
      "also compare this proxy view: kind sidecar (default), grpc or gateway; labels as k=v,k=v (repeatable)",
      collect,
      [] as string[],
    )
    .option("--no-default-proxies", "compare only the --proxy views, not one per namespace, workload label set, WorkloadGroup and Gateway")
    .option("-c, --config <file>", "server config file whose mesh settings (trust domain, outbound traffic policy) apply")
    .addOption(new Option("-o, --output <format>", "report format").choices(["text", "json"]).default("text"))
    .action(async (oldDir: string, newDir: string, opts: DiffOptions) => {
      process.exitCode = await runDiff(oldDir, newDir, opts, {
        out: { write: (s) => process.stdout.write(s) },
        err: { write: (s) => process.stderr.write(s) },
      });
    });
}
