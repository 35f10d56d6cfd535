// `vmpilot server`: runs the control plane until SIGTERM/SIGINT (drain, exit 0); SIGHUP re-reads the config file.
import { Command, Option } from "commander";
import { createLogger } from "@vmpilot/registry/logger";
import { ResourceCache } from "../cache.js";
import { withNameTables } from "../dns/nametable-cache.js";
import { loadServerConfig, ServerConfigError, type ServerFlags } from "../server/config.js";
import { ControlPlane } from "../server/control-plane.js";

const log = createLogger("server");

export async function runServer(flags: ServerFlags): Promise<void> {
  const config = await loadServerConfig(flags);
  const cp = new ControlPlane({ config, createCache: () => withNameTables(new ResourceCache()) });
  await cp.start();
  log.info("vmpilot server running", { ...cp.addresses, configDirs: config.configDirs, consul: config.consul?.address ?? null });

  let reloading = Promise.resolve();
  process.on("SIGHUP", () => {
    reloading = reloading.then(async () => {
      try {
        await cp.reload(await loadServerConfig(flags));
      } catch (err) {
        // A bad edit of the config file must not take the running server down: keep the current config.
        log.error("reload failed; keeping the current config", { error: (err as Error).message });
      }
    });
  });
  const shutdown = (signal: string): void => {
    log.info(`${signal}: draining xDS streams and shutting down`);
    cp.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error("shutdown failed", { error: err });
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

const collect = (v: string, acc: string[] = []): string[] => [...acc, v];

export function register(program: Command): void {
  program
    .command("server")
    .description("run the control plane: watch config dirs (and Consul), serve xDS, the CA and the HTTP views")
    .option("-c, --config <file>", "server config file (YAML; see config/vmpilot.yaml)")
    .option("--config-dir <dir>", "watched config directory (repeatable; replaces the file's configDirs)", collect)
    .option("--consul-addr <url>", "Consul agent address, e.g. http://127.0.0.1:8500 (enables the Consul source)")
    .option("--xds-addr <host:port>", "plaintext xDS address (default 127.0.0.1:15010)")
    .option("--secure-addr <host:port>", "mTLS xDS + CA address (default 0.0.0.0:15012; needs a state dir)")
    .option("--http-addr <host:port>", "HTTP address for /ready, /metrics, /debug/* (default 127.0.0.1:15014)")
    .option("--state-dir <dir>", "where the CA and token keys live (default $VMPILOT_STATE_DIR; unset = secure port off)")
    .addOption(new Option("--insecure", "allow plaintext xDS on a non-loopback address"))
    .action(async (flags: ServerFlags) => {
      try {
        await runServer(flags);
      } catch (err) {
        const msg = err instanceof ServerConfigError ? err.message : ((err as Error).stack ?? String(err));
        process.stderr.write(`vmpilot server: ${msg}\n`);
        process.exit(1);
      }
    });
}
