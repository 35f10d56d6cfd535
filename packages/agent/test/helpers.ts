// Real peers for the agent's tests: the control plane's CA (in-process on 127.0.0.1:0 with a temp state dir),
// a stand-in for the envoy binary, and polling.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { webcrypto } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import * as x509 from "@peculiar/x509";
import winston from "winston";
import { loadMeshCa, type MeshCa } from "@vmpilot/xds/ca/index";
import { memoryLogger } from "../src/log.js";

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export { until } from "../../../test/helpers/poll.js";

export interface RunningCa {
  ca: MeshCa;
  address: string;
  rootPem: string;
  stateDir: string;
  close(): Promise<void>;
}

/** The real mesh CA on the secure port's credentials, as `vmpilot server` runs it. */
export async function startCa(opts: { leafTtlMs?: number } = {}): Promise<RunningCa> {
  const stateDir = tmpDir("vmpilot-agent-ca-");
  const { logger } = quietWinston();
  const ca = await loadMeshCa({ stateDir, trustDomain: "cluster.local", ipAddresses: ["127.0.0.1"], logger, ...(opts.leafTtlMs ? { leafTtlMs: opts.leafTtlMs } : {}) });
  const server = new grpc.Server();
  ca.addTo(server);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ca.secure.credentials, (e, p) => (e ? reject(e) : resolve(p))));
  return {
    ca,
    address: `127.0.0.1:${port}`,
    rootPem: ca.authority.rootCertPem,
    stateDir,
    async close() {
      ca.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      server.forceShutdown();
      fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

function quietWinston(): { logger: winston.Logger } {
  return { logger: winston.createLogger({ level: "error", silent: true, transports: [new winston.transports.Console()] }) };
}

/**
 * A STAND-IN for the envoy binary (Envoy cannot be installed on this machine): a tiny Node script that records
 * its pid and arguments (and the signal that stops it) to a log file and stays up until signalled. Like Envoy it
 * opens an admin port (here always 127.0.0.1:0) and writes its address to `--admin-address-path`; its /ready and
 * /stats answer from a control file the test can change (`setAdmin`).
 */
export function writeEnvoyStandIn(dir: string): {
  binary: string;
  log: string;
  events(): { pid: number; args?: string[]; signal?: string }[];
  setAdmin(state: { live: boolean; cds: number; lds: number }): void;
} {
  const binary = path.join(dir, "envoy-stand-in");
  const log = path.join(dir, "envoy-stand-in.log");
  const control = path.join(dir, "envoy-stand-in.admin.json");
  const setAdmin = (state: { live: boolean; cds: number; lds: number }) => fs.writeFileSync(control, JSON.stringify(state));
  setAdmin({ live: true, cds: 1, lds: 1 });
  fs.writeFileSync(
    binary,
    `#!${process.execPath}
const fs = require("fs");
const http = require("http");
const log = ${JSON.stringify(log)};
fs.appendFileSync(log, JSON.stringify({ pid: process.pid, args: process.argv.slice(2) }) + "\\n");
process.on("SIGTERM", () => { fs.appendFileSync(log, JSON.stringify({ pid: process.pid, signal: "SIGTERM" }) + "\\n"); process.exit(0); });
const addressPath = process.argv[process.argv.indexOf("--admin-address-path") + 1];
const admin = http.createServer((req, res) => {
  const s = JSON.parse(fs.readFileSync(${JSON.stringify(control)}, "utf8"));
  if (req.url === "/ready") return res.writeHead(s.live ? 200 : 503).end(s.live ? "LIVE\\n" : "PRE_INITIALIZING\\n");
  if (req.url.startsWith("/stats")) return res.end("cluster_manager.cds.update_success: " + s.cds + "\\nlistener_manager.lds.update_rejected: 0\\nlistener_manager.lds.update_success: " + s.lds + "\\n");
  res.writeHead(404).end();
});
admin.listen(0, "127.0.0.1", () => fs.writeFileSync(addressPath, "127.0.0.1:" + admin.address().port));
`,
    { mode: 0o755 },
  );
  return {
    binary,
    log,
    events: () =>
      fs.existsSync(log)
        ? fs.readFileSync(log, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l))
        : [],
    setAdmin,
  };
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export { memoryLogger };

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
const EC_ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/** A self-signed certificate for `cn` and its PKCS#8 key (PEM), as an operator's tooling would drop them. */
export async function keyPair(cn: string): Promise<{ certPem: string; keyPem: string }> {
  const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Date.now().toString(16),
    name: `CN=${cn}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys,
    signingAlgorithm: EC_ALG,
  });
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey)).toString("base64").replace(/(.{64})/g, "$1\n");
  return { certPem: cert.toString("pem") + "\n", keyPem: `-----BEGIN PRIVATE KEY-----\n${der}${der.endsWith("\n") ? "" : "\n"}-----END PRIVATE KEY-----\n` };
}
