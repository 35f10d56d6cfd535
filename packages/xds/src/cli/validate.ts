// `vmpilot validate PATH...`: checks config files the way the server would load them, for CI and editors.
// Text output is one line per problem, `FILE:LINE:COL: error|warning: MESSAGE` (the format compilers use, so
// editors and CI annotate the right line), then a one-line summary. Exit 1 if anything is an error.
import { Command, Option } from "commander";
import { validatePaths, type AnyConfig, type ConfigProblem } from "@vmpilot/registry";

export interface ValidateOptions {
  output: "text" | "json";
}

export interface Output {
  write(s: string): void;
}

/** Runs the validation and prints the report; returns the process exit code. */
export async function runValidate(paths: string[], opts: ValidateOptions, out: Output): Promise<number> {
  const { objects, problems, files } = await validatePaths(paths);
  const errors = problems.filter((p) => p.severity === "error").length;
  const warnings = problems.length - errors;
  if (opts.output === "json") {
    out.write(`${JSON.stringify(jsonReport(files, objects, problems, errors, warnings), null, 2)}\n`);
  } else {
    for (const p of problems) out.write(`${formatProblem(p)}\n`);
    out.write(`${plural(files, "file")}, ${plural(objects.length, "object")}: ${plural(errors, "error")}, ${plural(warnings, "warning")}\n`);
  }
  return errors > 0 ? 1 : 0;
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}:${p.column}: ${p.severity}: ${p.message.replace(/\s*\n\s*/g, " ")}`;
}

function jsonReport(files: number, objects: AnyConfig[], problems: ConfigProblem[], errors: number, warnings: number) {
  return {
    valid: errors === 0,
    files,
    errors,
    warnings,
    objects: objects.map((o) => ({
      kind: o.kind,
      namespace: o.metadata.namespace,
      name: o.metadata.name,
      ...(o.origin.type === "file" ? { file: o.origin.file, line: o.origin.line, column: o.origin.column } : {}),
    })),
    problems,
  };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

export function register(program: Command): void {
  program
    .command("validate")
    .description("check config files or directories (.yaml, .yml, .json, recursively) as the server would load them")
    .argument("<paths...>", "files or directories")
    .addOption(new Option("-o, --output <format>", "report format").choices(["text", "json"]).default("text"))
    .action(async (paths: string[], opts: ValidateOptions) => {
      process.exitCode = await runValidate(paths, opts, { write: (s) => process.stdout.write(s) });
    });
}
