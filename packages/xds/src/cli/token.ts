// `vmpilot token create --namespace NS --service-account SA [--ttl DURATION]`: prints a bootstrap token that
// lets ONE new workload get its first certificate for spiffe://TRUST_DOMAIN/ns/NS/sa/SA from the CA. The token
// is signed with the state dir's token key (created on first use), so run this where the server's state dir is,
// or where the operator distributed that key to. Only the token goes to stdout, for `> token-file` and scripts.
import { Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_MESH, parseSpiffeId, spiffeId } from "@vmpilot/registry";
import { parseDuration } from "@vmpilot/registry/duration";
import { DEFAULT_STATE_DIR, stateDirFrom } from "../ca/index.js";
import { DEFAULT_TOKEN_TTL_MS, TokenAuthority } from "../ca/tokens.js";

export interface TokenCreateOptions {
  namespace: string;
  serviceAccount: string;
  ttl: number;
  stateDir?: string;
  trustDomain: string;
}

function ttlArg(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms < 1000) {
    throw new InvalidArgumentError(`"${value}" is not a duration of at least 1s (e.g. 30m, 1h, 24h)`);
  }
  return ms;
}

/** Creates and returns the token (the action prints it). */
export async function createToken(opts: TokenCreateOptions): Promise<string> {
  const id = spiffeId(opts.trustDomain, opts.namespace, opts.serviceAccount);
  if (!parseSpiffeId(id)) {
    throw new Error(`"${id}" is not a valid identity: namespace, service account and trust domain may hold letters, digits, ".", "_" and "-"`);
  }
  const tokens = await TokenAuthority.load({ stateDir: stateDirFrom(opts.stateDir) });
  return tokens.create({
    trustDomain: opts.trustDomain,
    namespace: opts.namespace,
    serviceAccount: opts.serviceAccount,
    ttlMs: opts.ttl,
  });
}

export function register(program: Command): void {
  const token = program.command("token").description("bootstrap tokens for workload identities");
  token
    .command("create")
    .description("print a token that lets one workload obtain its first certificate for its SPIFFE identity")
    .requiredOption("-n, --namespace <ns>", "workload namespace")
    .requiredOption("-s, --service-account <sa>", "workload service account")
    .addOption(new Option("--ttl <duration>", "token lifetime (e.g. 30m, 1h)").argParser(ttlArg).default(DEFAULT_TOKEN_TTL_MS, "24h"))
    .option("--state-dir <dir>", `control plane state dir holding tokens/signing-key.pem (default $VMPILOT_STATE_DIR or ${DEFAULT_STATE_DIR})`)
    .option("--trust-domain <domain>", "mesh trust domain", DEFAULT_MESH.trustDomain)
    .action(async (opts: TokenCreateOptions) => {
      try {
        process.stdout.write(`${await createToken(opts)}\n`);
      } catch (e) {
        process.stderr.write(`vmpilot token create: ${(e as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
