#!/usr/bin/env node
// vmpilot-agent: bootstrap | run | iptables. Errors go to stderr with exit code 1; output meant for other tools
// (bootstrap JSON, iptables lines) goes to stdout.
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError } from "commander";
import { Agent, AgentStartError } from "./agent.js";
import { envoyBootstrap } from "./bootstrap/envoy.js";
import { grpcBootstrap } from "./bootstrap/grpc.js";
import { AgentConfigError, loadAgentConfig, type AgentConfig } from "./config.js";
import { writeFileAtomic } from "./files.js";
import { captureSettings, redirectPlan, removalFromPlan, renderCommands, renderRemovalCommands } from "./iptables.js";
import { applyPlan, IptablesApplyError, removeCapture } from "./iptables-apply.js";
import { agentLogger } from "./log.js";
import { VERSION } from "./version.js";

type Out = { stdout: (s: string) => void; stderr: (s: string) => void };

function load(file: string | undefined, env: NodeJS.ProcessEnv): AgentConfig {
  return loadAgentConfig(file, env);
}

export function bootstrapJson(cfg: AgentConfig, kind?: "envoy" | "grpc" | "gateway"): Record<string, unknown> {
  const k = kind ?? (cfg.proxy.kind === "grpc" ? "grpc" : cfg.proxy.kind === "gateway" ? "gateway" : "envoy");
  if (k === "grpc") return grpcBootstrap(cfg);
  return envoyBootstrap(cfg, { kind: k === "gateway" ? "gateway" : "sidecar" });
}

function kindArg(v: string): "envoy" | "grpc" | "gateway" {
  if (v === "envoy" || v === "grpc" || v === "gateway") return v;
  throw new InvalidArgumentError("expected envoy, grpc or gateway");
}

/** Builds the command tree; `main` runs it. Separate so tests can drive it without a child process. */
export function buildCli(out: Out, env: NodeJS.ProcessEnv, onRun: (agent: Agent) => Promise<void>): Command {
  const program = new Command("vmpilot-agent")
    .description("Joins this VM to the vmpilot mesh: identity, bootstrap, Envoy, probes, traffic capture")
    .version(VERSION)
    .configureOutput({ writeOut: out.stdout, writeErr: out.stderr })
    .exitOverride();

  program
    .command("bootstrap")
    .description("print (or write) the Envoy or gRPC xDS bootstrap for this workload")
    .requiredOption("-c, --config <file>", "agent config (YAML)")
    .option("-o, --out <file>", "write to this file (atomically) instead of stdout")
    .option("-k, --kind <kind>", "envoy | grpc | gateway (default: from proxy.kind)", kindArg)
    .action(async (o: { config: string; out?: string; kind?: "envoy" | "grpc" | "gateway" }) => {
      const json = JSON.stringify(bootstrapJson(load(o.config, env), o.kind), null, 2) + "\n";
      if (o.out) await writeFileAtomic(o.out, json, 0o644);
      else out.stdout(json);
    });

  program
    .command("run")
    .description("obtain the certificate, write bootstraps, run and supervise Envoy, probe the app, serve status")
    .requiredOption("-c, --config <file>", "agent config (YAML)")
    .option("--envoy-bin <path>", "Envoy binary (default: proxy.envoyBinary, else `envoy` on PATH)")
    .action(async (o: { config: string; envoyBin?: string }) => {
      const cfg = load(o.config, env);
      await onRun(new Agent(cfg, o.envoyBin ? { envoyBinary: o.envoyBin } : {}));
    });

  program
    .command("iptables")
    .description("print (--dry-run), apply or remove (--remove) the REDIRECT rules that send traffic through Envoy and DNS to the agent")
    .option("-c, --config <file>", "agent config (YAML); not needed to --remove")
    .option("--dry-run", "print the iptables commands instead of applying them")
    .option("--remove", "take every capture rule and chain of the agent off this host (what is installed, whatever the config says now)")
    .action((o: { config?: string; dryRun?: boolean; remove?: boolean }) => {
      if (o.remove && !o.dryRun) {
        const removed = removeCapture();
        out.stderr(removed.chains.length + removed.jumps.length === 0 ? "no capture rules installed\n" : `removed ${removed.jumps.length} jumps and chains ${removed.chains.join(", ")}\n`);
        return;
      }
      if (!o.config) throw new IptablesApplyError("--config is required (only --remove works without it)");
      const cfg = load(o.config, env);
      if (o.remove) {
        out.stderr("note: printed from the config; the removal itself reads what iptables-save shows installed\n");
        out.stdout(renderRemovalCommands(removalFromPlan(redirectPlan(captureSettings(cfg)))).join("\n") + "\n");
        return;
      }
      if (cfg.interception.mode !== "REDIRECT" && !cfg.dns.capture) {
        throw new IptablesApplyError(`interception.mode is ${cfg.interception.mode} and dns.capture is off: there are no capture rules to ${o.dryRun ? "print" : "apply"}`);
      }
      const plan = redirectPlan(captureSettings(cfg));
      for (const n of plan.notes) out.stderr(`note: ${n}\n`);
      if (o.dryRun) out.stdout(renderCommands(plan).join("\n") + "\n");
      else applyPlan(plan);
    });
  return program;
}

/** Runs the agent until SIGTERM/SIGINT, then stops it (Envoy drains) and resolves. */
export async function runUntilSignalled(agent: Agent): Promise<void> {
  const log = agentLogger("run");
  let stopping: Promise<void> | undefined;
  const stop = (sig: NodeJS.Signals) => {
    if (stopping) return;
    log.info(`${sig}: stopping`);
    stopping = agent.stop();
  };
  const done = new Promise<void>((resolve) => {
    for (const sig of ["SIGTERM", "SIGINT"] as const) {
      process.once(sig, () => {
        stop(sig);
        void stopping!.then(resolve);
      });
    }
  });
  try {
    await agent.start();
  } catch (e) {
    // SIGTERM while still waiting for the first certificate is a normal stop, not a failure.
    if (stopping) return void (await stopping);
    throw e;
  }
  await done;
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const out: Out = { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) };
  const program = buildCli(out, env, runUntilSignalled);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string; exitCode?: number };
    if (err.code?.startsWith("commander.")) return err.exitCode ?? 1;
    if (e instanceof AgentConfigError) out.stderr(`${err.message}\n`);
    else if (e instanceof AgentStartError || e instanceof IptablesApplyError) out.stderr(`vmpilot-agent: ${err.message}\n`);
    else out.stderr(`vmpilot-agent: ${err.stack ?? err.message}\n`);
    return 1;
  }
}

function isEntryPoint(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`vmpilot-agent: ${(e as Error).stack}\n`);
      process.exit(1);
    },
  );
}
