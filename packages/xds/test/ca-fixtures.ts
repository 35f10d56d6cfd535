// Shared pieces of the CA, token and secure-port tests: a capturing logger, certificate inspection, chain
// verification by OpenSSL (an independent implementation) and by Node, and a root/intermediate pair an
// operator would plug in.
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as x509 from "@peculiar/x509";
import winston from "winston";
// winston's own base class for transports (a dependency of winston, what `winston.Transport` is at runtime).
import Transport from "winston-transport";
import { SECURE_PORT_CHANNEL_OPTIONS } from "../src/ca/client.js";
import { checkStreamIdentity } from "../src/ca/identity.js";
import { loadMeshCa, type MeshCa, type MeshCaOptions } from "../src/ca/index.js";
import { ECDSA_SHA256, generateP256, privateKeyToPem, webcrypto } from "../src/ca/keys.js";
import { proxyViewFromNode, type XdsNode } from "../src/proxy-view.js";

export interface LogEntry {
  level: string;
  message: string;
  [k: string]: unknown;
}

/** A winston logger whose entries the test can read (and that prints nothing). */
export function captureLogger(): { logger: winston.Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  class Capture extends Transport {
    override log(info: LogEntry, next: () => void): void {
      entries.push(info);
      next();
    }
  }
  return { logger: winston.createLogger({ level: "debug", transports: [new Capture()] }), entries };
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function nodeCert(pemText: string): crypto.X509Certificate {
  return new crypto.X509Certificate(pemText);
}

export function uriSans(pemText: string): { uris: string[]; all: x509.GeneralName[]; critical: boolean } {
  const san = new x509.X509Certificate(pemText).getExtension(x509.SubjectAlternativeNameExtension);
  const all = [...(san?.names.items ?? [])];
  return { uris: all.filter((n) => n.type === "url").map((n) => n.value), all, critical: san?.critical ?? false };
}

export function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * Verifies `chain` (leaf first, root last) up to `rootPem`: every link by Node (issuer + signature), and the
 * whole path by `openssl verify` with the root as the only trust anchor when OpenSSL is installed.
 * Returns what OpenSSL said (or why it was not asked).
 */
export function verifyChain(chain: string[], rootPem: string, dir: string): string {
  for (let i = 0; i + 1 < chain.length; i++) {
    const c = nodeCert(chain[i]!);
    const issuer = nodeCert(chain[i + 1]!);
    if (!c.checkIssued(issuer) || !c.verify(issuer.publicKey)) throw new Error(`chain link ${i} is not issued by link ${i + 1}`);
  }
  if (chain[chain.length - 1]!.trim() !== rootPem.trim()) throw new Error("chain does not end with the root");
  if (!hasOpenssl()) return "openssl not installed; checked with Node only";
  const f = (n: string, data: string) => {
    const p = path.join(dir, n);
    fs.writeFileSync(p, data);
    return p;
  };
  const root = f("verify-root.pem", rootPem);
  const leaf = f("verify-leaf.pem", chain[0]!);
  const args = ["verify", "-purpose", "sslclient", "-CAfile", root];
  const middle = chain.slice(1, -1);
  if (middle.length > 0) args.push("-untrusted", f("verify-untrusted.pem", middle.join("")));
  args.push(leaf);
  return execFileSync("openssl", args, { encoding: "utf8" }).trim();
}

/** A self-signed root and an intermediate signed by it, P-256, as an operator's offline CA would make them. */
export async function makeRootAndIntermediate(): Promise<{
  rootPem: string;
  intermediatePem: string;
  intermediateKeyPem: string;
}> {
  const rootKeys = await generateP256();
  const interKeys = await generateP256();
  const now = Date.now();
  const root = await x509.X509CertificateGenerator.createSelfSigned(
    {
      name: "O=example corp, CN=offline root",
      notBefore: new Date(now - 3600_000),
      notAfter: new Date(now + 365 * 24 * 3600_000),
      keys: rootKeys,
      signingAlgorithm: ECDSA_SHA256,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  const inter = await x509.X509CertificateGenerator.create(
    {
      subject: "O=example corp, CN=vmpilot intermediate",
      issuer: root.subjectName,
      notBefore: new Date(now - 3600_000),
      notAfter: new Date(now + 180 * 24 * 3600_000),
      publicKey: interKeys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: ECDSA_SHA256,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(interKeys.publicKey, false, webcrypto),
        await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  return {
    rootPem: root.toString("pem") + "\n",
    intermediatePem: inter.toString("pem") + "\n",
    intermediateKeyPem: await privateKeyToPem(interKeys.privateKey),
  };
}

/** An RSA-2048 key and a CSR for `spiffeId` (the CA must refuse the key type). */
export async function rsaCsr(spiffeId: string): Promise<string> {
  const keys = (await webcrypto.subtle.generateKey(
    { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
    true,
    ["sign", "verify"],
  )) as CryptoKeyPairLike;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      keys: keys as never,
      signingAlgorithm: { name: "RSASSA-PKCS1-v1_5" },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }])],
    },
    webcrypto as never,
  );
  return csr.toString("pem");
}

/** A P-256 CSR with arbitrary SANs (for the CSR-shape refusals). */
export async function csrWithSans(names: x509.JsonGeneralName[]): Promise<string> {
  const keys = await generateP256();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { keys: keys as never, signingAlgorithm: ECDSA_SHA256, extensions: [new x509.SubjectAlternativeNameExtension(names)] },
    webcrypto as never,
  );
  return csr.toString("pem");
}

type CryptoKeyPairLike = crypto.webcrypto.CryptoKeyPair;

// ---- a real secure port: CA service + a tiny ADS-like stream that runs the identity check ----

const json = {
  serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as unknown,
};

/** A bidi stream shaped like ADS: the first message carries the node; the server checks it, then answers once. */
export const PROBE_PATH = "/vmpilot.test.Probe/Stream";
const probeService: grpc.ServiceDefinition = {
  Stream: {
    path: PROBE_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};

export interface SecurePort {
  address: string;
  ca: MeshCa;
  server: grpc.Server;
  close(): Promise<void>;
}

export async function startSecurePort(opts: Omit<MeshCaOptions, "trustDomain"> & { trustDomain?: string }): Promise<SecurePort> {
  const ca = await loadMeshCa({ trustDomain: "cluster.local", ...opts });
  const server = new grpc.Server();
  ca.addTo(server);
  server.addService(probeService, {
    Stream(call: grpc.ServerDuplexStream<{ node: XdsNode }, unknown>) {
      call.once("data", (req: { node: XdsNode }) => {
        const view = proxyViewFromNode(req.node);
        const refusal = checkStreamIdentity(call, view, ca.trustDomain);
        if (refusal) {
          call.emit("error", { code: refusal.code, details: refusal.message });
          return;
        }
        call.write({ accepted: view.id });
        call.end();
      });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ca.secure.credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    ca,
    server,
    close: async () => {
      ca.close();
      await new Promise<void>((r) => server.tryShutdown(() => r()));
    },
  };
}

/** Opens the probe stream with `node` over `creds`; resolves with the server's answer or rejects with its status. */
export function probeStream(address: string, creds: grpc.ChannelCredentials, node: XdsNode): Promise<unknown> {
  const client = new grpc.Client(address, creds, SECURE_PORT_CHANNEL_OPTIONS);
  return new Promise<unknown>((resolve, reject) => {
    const call = client.makeBidiStreamRequest(PROBE_PATH, json.serialize, json.deserialize, {
      deadline: Date.now() + 20_000,
    });
    let answer: unknown;
    call.on("data", (d) => (answer = d));
    call.on("error", (e) => reject(e));
    call.on("status", (s) => {
      if (s.code === grpc.status.OK) resolve(answer);
    });
    call.write({ node });
    call.end();
  }).finally(() => client.close());
}
