// `vmpilot token create --namespace NS --service-account SA [--ttl DURATION]`: prints a bootstrap token that
// lets ONE new workload get its first certificate for spiffe://TRUST_DOMAIN/ns/NS/sa/SA from the CA.
//
// The token must be signed with the server's token key and name the server's trust domain, so both come from
// where the server takes them: `--config FILE` (its stateDir and mesh.trustDomain), `--state-dir` /
// `VMPILOT_STATE_DIR`, `--trust-domain`. Run it where the state dir is (or where the operator distributed
// tokens/signing-key.pem to). Only the token goes to stdout, for `> token-file` and scripts.
import { Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_MESH, parseSpiffeId, spiffeId } from "@vmpilot/registry";
import { parseDuration } from "@vmpilot/registry/duration";
import { DEFAULT_TOKEN_TTL_MS, TokenAuthority } from "../ca/tokens.js";
import { loadServerConfig } from "../server/config.js";

export interface TokenCreateOptions {
  namespace: string;
  serviceAccount: string;
  ttl: number;
  config?: string;
  stateDir?: string;
  trustDomain?: string;
}

function ttlArg(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms < 1000) {
    throw new InvalidArgumentError(`"${value}" is not a duration of at least 1s (e.g. 30m, 1h, 24h)`);
  }
  return ms;
}

/** State dir and trust domain as the server would resolve them. */
async function serverSettings(opts: TokenCreateOptions): Promise<{ stateDir: string; trustDomain: string }> {
  let stateDir = opts.stateDir ?? process.env.VMPILOT_STATE_DIR;
  let trustDomain = opts.trustDomain;
  if (opts.config) {
    const cfg = await loadServerConfig({ config: opts.config, ...(opts.stateDir ? { stateDir: opts.stateDir } : {}) });
    stateDir = cfg.stateDir;
    trustDomain ??= cfg.mesh.trustDomain;
  }
  if (!stateDir) {
    throw new Error("no state dir: pass --state-dir DIR or --config FILE (with stateDir), or set VMPILOT_STATE_DIR");
  }
  return { stateDir, trustDomain: trustDomain ?? DEFAULT_MESH.trustDomain };
}

/** Creates and returns the token (the action prints it). */
export async function createToken(opts: TokenCreateOptions): Promise<string> {
  const { stateDir, trustDomain } = await serverSettings(opts);
  const id = spiffeId(trustDomain, opts.namespace, opts.serviceAccount);
  if (!parseSpiffeId(id)) {
    throw new Error(`"${id}" is not a valid identity: namespace, service account and trust domain may hold letters, digits, ".", "_" and "-"`);
  }
  const tokens = await TokenAuthority.load({ stateDir });
  return tokens.create({ trustDomain, namespace: opts.namespace, serviceAccount: opts.serviceAccount, ttlMs: opts.ttl });
}

export function register(program: Command): void {
  const token = program.command("token").description("bootstrap tokens for workload identities");
  token
    .command("create")
    .description("print a token that lets one workload obtain its first certificate for its SPIFFE identity")
    .requiredOption("-n, --namespace <ns>", "workload namespace")
    .requiredOption("-s, --service-account <sa>", "workload service account")
    .addOption(new Option("--ttl <duration>", "token lifetime (e.g. 30m, 1h)").argParser(ttlArg).default(DEFAULT_TOKEN_TTL_MS, "24h"))
    .option("-c, --config <file>", "server config file: its stateDir and mesh.trustDomain apply")
    .option("--state-dir <dir>", "server state dir holding tokens/signing-key.pem (default: the config's, else $VMPILOT_STATE_DIR)")
    .option("--trust-domain <domain>", `mesh trust domain (default: the config's, else ${DEFAULT_MESH.trustDomain})`)
    .action(async (opts: TokenCreateOptions) => {
      try {
        process.stdout.write(`${await createToken(opts)}\n`);
      } catch (e) {
        process.stderr.write(`vmpilot token create: ${(e as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
