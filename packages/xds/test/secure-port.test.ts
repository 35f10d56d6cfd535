// The secure port end to end over real gRPC + TLS on loopback: first certificate with a token, renewals with
// the certificate after the token expired, every refusal with its status, message and log line, and the
// identity check an ADS stream passes (a probe stream on the same credentials runs the same function).
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { CertificateAuthority, controlPlaneSpiffeId } from "../src/ca/authority.js";
import {
  CertificateRequestError,
  requestCertificate,
  securePortChannelCredentials,
  type RequestCertificateOptions,
} from "../src/ca/client.js";
import { generateKeyAndCsr, parseCsr } from "../src/ca/csr.js";
import { caServiceConstructor } from "../src/ca/proto.js";
import { TokenAuthority } from "../src/ca/tokens.js";
import {
  captureLogger,
  csrWithSans,
  makeRootAndIntermediate,
  nodeCert,
  probeStream,
  rsaCsr,
  startSecurePort,
  tmpDir,
  uriSans,
  verifyChain,
  type LogEntry,
  type SecurePort,
} from "./ca-fixtures.js";
import { until } from "../../../test/helpers/poll.js";

const TD = "cluster.local";
const CART = `spiffe://${TD}/ns/shop/sa/cart`;
const ADMIN = `spiffe://${TD}/ns/shop/sa/admin`;
const SERVER_SAN = controlPlaneSpiffeId(TD);

interface Workload {
  keyPem: string;
  chain: string[];
  clientKeyCert: { keyPem: string; certChainPem: string };
}

function asWorkload(keyPem: string, chain: string[]): Workload {
  return { keyPem, chain, clientKeyCert: { keyPem, certChainPem: chain.slice(0, -1).join("") } };
}

function sidecarNode(ns: string, sa: string) {
  return { id: `sidecar~10.0.0.7~vm-1.${ns}~${ns}.svc.cluster.local`, metadata: { NAMESPACE: ns, SERVICE_ACCOUNT: sa } };
}

describe("secure port: CA and identity checks over mTLS", function () {
  this.timeout(60_000);
  const dirs: string[] = [];
  const newDir = () => {
    const d = tmpDir("vmpilot-secure-");
    dirs.push(d);
    return d;
  };
  let port: SecurePort;
  let log: LogEntry[];
  let rootPem: string;

  before(async () => {
    const captured = captureLogger();
    log = captured.entries;
    port = await startSecurePort({ stateDir: newDir(), leafTtlMs: 2 * 3600_000, tokenClockToleranceS: 0, logger: captured.logger });
    rootPem = port.ca.authority.rootCertPem;
  });
  after(async () => {
    await port?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  const token = (sa = "cart", ttlMs = 3600_000) =>
    port.ca.tokens.create({ trustDomain: TD, namespace: "shop", serviceAccount: sa, ttlMs });

  function ask(opts: Partial<RequestCertificateOptions> & { csrPem: string }): Promise<string[]> {
    return requestCertificate({ address: port.address, rootCaPem: rootPem, expectedServerSan: SERVER_SAN, ...opts });
  }

  async function enroll(id = CART, extra: Partial<RequestCertificateOptions> = {}): Promise<Workload> {
    const { keyPem, csrPem } = await generateKeyAndCsr(id);
    const tok = extra.token ?? (await token(id.split("/").pop()));
    return asWorkload(keyPem, await ask({ csrPem, token: tok, ...extra }));
  }

  /** Awaits a refusal and checks its status, its message, and that the CA logged exactly that reason. */
  async function refused(p: Promise<unknown>, code: grpc.status, message: string | RegExp, logged = true) {
    const before = log.length;
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, "the request should have been refused").to.be.instanceOf(CertificateRequestError);
    const e = err as CertificateRequestError;
    expect(grpc.status[e.code]).to.equal(grpc.status[code]);
    if (typeof message === "string") expect(e.details).to.equal(message);
    else expect(e.details).to.match(message);
    if (logged) {
      const entry = log.slice(before).find((l) => l.message === "refused certificate request");
      expect(entry, "refusal logged").to.not.equal(undefined);
      expect(entry).to.include({ level: "warn", reason: e.details, code: grpc.status[code] });
    }
    expect(log.slice(before).some((l) => l.message === "issued certificate"), "nothing issued").to.equal(false);
    return e;
  }

  describe("issuing", () => {
    it("token -> CSR -> a chain to the root with only the URI SAN, P-256, the requested lifetime", async () => {
      const { keyPem, csrPem } = await generateKeyAndCsr(CART);
      const t0 = Date.now();
      const chain = await ask({ csrPem, token: await token(), validitySeconds: 600 });
      expect(chain).to.have.length(2);
      verifyChain(chain, rootPem, newDir());
      expect(uriSans(chain[0]!).all.map((n) => `${n.type}:${n.value}`)).to.deep.equal([`url:${CART}`]);
      const leaf = nodeCert(chain[0]!);
      expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).to.equal("prime256v1");
      expect(leaf.checkPrivateKey((await import("node:crypto")).createPrivateKey(keyPem))).to.equal(true);
      expect(new Date(leaf.validTo).getTime()).to.be.closeTo(t0 + 600_000, 5_000);
      const issued = log.filter((l) => l.message === "issued certificate").pop();
      expect(issued).to.include({ identity: CART, via: "token" });
    });

    it("a longer requested lifetime is capped at the CA's maximum", async () => {
      const { csrPem } = await generateKeyAndCsr(CART);
      const t0 = Date.now();
      const chain = await ask({ csrPem, token: await token(), validitySeconds: 30 * 24 * 3600 });
      expect(new Date(nodeCert(chain[0]!).validTo).getTime()).to.be.closeTo(t0 + 2 * 3600_000, 5_000);
    });

    it("renews with the client certificate after the bootstrap token has expired", async () => {
      const shortToken = await token("cart", 1000);
      const first = await enroll(CART, { token: shortToken });
      // Wait for the token to really be expired (the CA is configured without clock leeway).
      await until("token expiry", () => port.ca.tokens.verify(shortToken, TD).then(() => false, () => true), 10_000);

      const fresh = await generateKeyAndCsr(CART);
      await refused(
        ask({ csrPem: fresh.csrPem, token: shortToken }),
        grpc.status.UNAUTHENTICATED,
        /^bearer token rejected: token expired at \d{4}-/,
      );

      // The agent may keep sending its expired token: the certificate still proves the identity.
      const renewed = asWorkload(
        fresh.keyPem,
        await ask({ csrPem: fresh.csrPem, token: shortToken, clientKeyCert: first.clientKeyCert }),
      );
      expect(log.filter((l) => l.message === "issued certificate").pop()).to.include({ via: "client-certificate" });
      expect(nodeCert(renewed.chain[0]!).serialNumber).to.not.equal(nodeCert(first.chain[0]!).serialNumber);

      // And the renewed certificate renews again, with no token at all.
      const next = await generateKeyAndCsr(CART);
      const again = await ask({ csrPem: next.csrPem, clientKeyCert: renewed.clientKeyCert });
      expect(uriSans(again[0]!).uris).to.deep.equal([CART]);
      // The renewed certificate is also good for the xDS stream.
      const creds = securePortChannelCredentials({ rootCaPem: rootPem, expectedServerSan: SERVER_SAN, clientKeyCert: renewed.clientKeyCert });
      expect(await probeStream(port.address, creds, sidecarNode("shop", "cart"))).to.deep.equal({
        accepted: sidecarNode("shop", "cart").id,
      });
    });
  });

  describe("refusals", () => {
    it("no credentials at all", async () => {
      const { csrPem } = await generateKeyAndCsr(CART);
      await refused(
        ask({ csrPem }),
        grpc.status.UNAUTHENTICATED,
        'no credentials: send "authorization: Bearer <token>" metadata or connect with a client certificate issued by this CA ' +
          "(no verified client certificate (none presented, or not issued by this mesh's CA))",
      );
    });

    it("a token for another service account", async () => {
      const { csrPem } = await generateKeyAndCsr(ADMIN);
      await refused(
        ask({ csrPem, token: await token("cart") }),
        grpc.status.PERMISSION_DENIED,
        `token is for ${CART} but the CSR asks for ${ADMIN}`,
      );
    });

    it("a tampered token (one signature byte flipped)", async () => {
      const [h, p, s] = (await token()).split(".") as [string, string, string];
      const sig = Buffer.from(s, "base64url");
      sig[20] = sig[20]! ^ 0x80;
      const { csrPem } = await generateKeyAndCsr(CART);
      await refused(
        ask({ csrPem, token: `${h}.${p}.${sig.toString("base64url")}` }),
        grpc.status.UNAUTHENTICATED,
        "bearer token rejected: token signature does not verify (tampered or forged token)",
      );
    });

    it("a token signed by another control plane's key", async () => {
      const other = await TokenAuthority.load({ stateDir: newDir() });
      const forged = await other.create({ trustDomain: TD, namespace: "shop", serviceAccount: "cart" });
      const { csrPem } = await generateKeyAndCsr(CART);
      await refused(
        ask({ csrPem, token: forged }),
        grpc.status.UNAUTHENTICATED,
        `bearer token rejected: token signature does not verify: signed by another key (kid ${other.keyId}, this control plane's key is ${port.ca.tokens.keyId})`,
      );
    });

    it("a malformed authorization header", async () => {
      const { csrPem } = await generateKeyAndCsr(CART);
      const Client = caServiceConstructor();
      const client = new Client(port.address, securePortChannelCredentials({ rootCaPem: rootPem, expectedServerSan: SERVER_SAN }), {
        "grpc.ssl_target_name_override": "vmpilot.vmpilot-system.svc",
      });
      const md = new grpc.Metadata();
      md.set("authorization", `Basic ${await token()}`);
      const p = new Promise<unknown>((resolve, reject) =>
        (client as unknown as { CreateCertificate: (r: object, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, r?: unknown) => void) => void })
          .CreateCertificate({ csr: csrPem, validity_seconds: 0 }, md, (e, r) =>
            e ? reject(new CertificateRequestError(e.code, e.details)) : resolve(r),
          ),
      );
      try {
        await refused(p, grpc.status.UNAUTHENTICATED, 'authorization metadata must be "Bearer <token>"');
      } finally {
        client.close();
      }
    });

    it("CSRs: extra DNS SAN, two URIs, no SAN, an RSA key, another trust domain, garbage", async () => {
      const tok = await token();
      await refused(
        ask({ csrPem: await csrWithSans([{ type: "url", value: CART }, { type: "dns", value: "evil.example.com" }]), token: tok }),
        grpc.status.INVALID_ARGUMENT,
        "CSR has SANs other than the SPIFFE URI (DNS:evil.example.com); only one URI SAN is allowed",
      );
      await refused(
        ask({ csrPem: await csrWithSans([{ type: "url", value: CART }, { type: "url", value: ADMIN }]), token: tok }),
        grpc.status.INVALID_ARGUMENT,
        `CSR has 2 URI SANs (${CART}, ${ADMIN}); exactly one is allowed`,
      );
      await refused(
        ask({ csrPem: await csrWithSans([]), token: tok }),
        grpc.status.INVALID_ARGUMENT,
        "CSR has no URI SAN; it must ask for exactly one spiffe://TRUST_DOMAIN/ns/NS/sa/SA",
      );
      await refused(
        ask({ csrPem: await rsaCsr(CART), token: tok }),
        grpc.status.INVALID_ARGUMENT,
        "CSR key is RSASSA-PKCS1-v1_5; only ECDSA P-256 keys are accepted",
      );
      await refused(
        ask({ csrPem: (await generateKeyAndCsr("spiffe://other.domain/ns/shop/sa/cart")).csrPem, token: tok }),
        grpc.status.PERMISSION_DENIED,
        "CSR asks for trust domain other.domain, this CA serves cluster.local",
      );
      await refused(
        ask({ csrPem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", token: tok }),
        grpc.status.INVALID_ARGUMENT,
        /^CSR does not parse: /,
      );
    });

    it("a CSR whose signature does not match its key", async () => {
      const { csrPem } = await generateKeyAndCsr(CART);
      const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
      der[der.length - 5] = der[der.length - 5]! ^ 0x01; // inside the signature BIT STRING
      const broken = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
      await refused(ask({ csrPem: broken, token: await token() }), grpc.status.INVALID_ARGUMENT, /^CSR signature (does not verify|cannot be checked)/);
    });

    it("a client certificate for another identity than the CSR asks for", async () => {
      const cart = await enroll(CART);
      const { csrPem } = await generateKeyAndCsr(ADMIN);
      await refused(
        ask({ csrPem, clientKeyCert: cart.clientKeyCert }),
        grpc.status.PERMISSION_DENIED,
        `client certificate identity ${CART} does not match the CSR identity ${ADMIN}`,
      );
    });

    it("a client certificate from another CA counts as none", async () => {
      const foreignCa = await CertificateAuthority.load({ dir: path.join(newDir(), "ca"), trustDomain: TD, logger: captureLogger().logger });
      const { keyPem, csrPem } = await generateKeyAndCsr(CART);
      const csr = await parseCsr(csrPem);
      const foreign = await foreignCa.issue({ publicKey: csr.publicKey, spiffeId: CART });
      const clientKeyCert = { keyPem, certChainPem: foreign.certPem };
      await refused(
        ask({ csrPem: (await generateKeyAndCsr(CART)).csrPem, clientKeyCert }),
        grpc.status.UNAUTHENTICATED,
        /^no credentials: .*\(no verified client certificate \(none presented, or not issued by this mesh's CA\)\)$/,
      );
      const creds = securePortChannelCredentials({ rootCaPem: rootPem, expectedServerSan: SERVER_SAN, clientKeyCert });
      const err = (await probeStream(port.address, creds, sidecarNode("shop", "cart")).catch((e: unknown) => e)) as grpc.ServiceError;
      expect(grpc.status[err.code]).to.equal("UNAUTHENTICATED");
      expect(err.details).to.equal(
        "client certificate required: no verified client certificate (none presented, or not issued by this mesh's CA)",
      );
    });

    it("a plaintext client fails cleanly and the port keeps serving TLS", async () => {
      const { csrPem } = await generateKeyAndCsr(CART);
      const before = log.length;
      const Client = caServiceConstructor();
      const client = new Client(port.address, grpc.credentials.createInsecure());
      const err = await new Promise<grpc.ServiceError>((resolve) =>
        (client as unknown as { CreateCertificate: (r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void })
          .CreateCertificate({ csr: csrPem, validity_seconds: 0 }, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (e) => resolve(e!)),
      );
      client.close();
      expect(err, "plaintext call must fail").to.not.equal(null);
      expect(["UNAVAILABLE", "DEADLINE_EXCEEDED"]).to.include(grpc.status[err.code]);
      expect(log.slice(before).some((l) => l.message === "issued certificate")).to.equal(false);

      const plainStream = (await probeStream(port.address, grpc.credentials.createInsecure(), sidecarNode("shop", "cart")).catch(
        (e: unknown) => e,
      )) as grpc.ServiceError;
      expect(["UNAVAILABLE", "DEADLINE_EXCEEDED"]).to.include(grpc.status[plainStream.code]);

      expect(uriSans((await enroll()).chain[0]!).uris).to.deep.equal([CART]);
    });

    it("the agent refuses a server that does not present the expected SAN", async () => {
      const { csrPem } = await generateKeyAndCsr(CART);
      const before = log.length;
      const err = (await ask({ csrPem, token: await token(), expectedServerSan: `spiffe://${TD}/ns/evil/sa/mitm` }).catch(
        (e: unknown) => e,
      )) as CertificateRequestError;
      expect(grpc.status[err.code]).to.equal("UNAVAILABLE");
      expect(err.details).to.include(`expected spiffe://${TD}/ns/evil/sa/mitm`);
      expect(log.slice(before).some((l) => l.message === "issued certificate"), "the CSR never reached the CA").to.equal(false);
    });
  });

  describe("ADS stream identity (checkStreamIdentity on a real mTLS stream)", () => {
    let cart: Workload;
    before(async () => {
      cart = await enroll(CART);
    });
    const withCert = () => securePortChannelCredentials({ rootCaPem: rootPem, expectedServerSan: SERVER_SAN, clientKeyCert: cart.clientKeyCert });

    it("accepts a proxy whose metadata names its certificate's identity", async () => {
      expect(await probeStream(port.address, withCert(), sidecarNode("shop", "cart"))).to.deep.equal({ accepted: sidecarNode("shop", "cart").id });
    });

    it("refuses metadata claiming another service account or namespace", async () => {
      for (const [ns, sa] of [
        ["shop", "admin"],
        ["payments", "cart"],
      ] as const) {
        const node = sidecarNode(ns, sa);
        const err = (await probeStream(port.address, withCert(), node).catch((e: unknown) => e)) as grpc.ServiceError;
        expect(grpc.status[err.code]).to.equal("PERMISSION_DENIED");
        expect(err.details).to.equal(
          `certificate identity ${CART} does not match node metadata NAMESPACE=${ns} SERVICE_ACCOUNT=${sa} (node ${node.id})`,
        );
      }
    });

    it("refuses a node without SERVICE_ACCOUNT", async () => {
      const node = { id: "grpc-client-1", metadata: { NAMESPACE: "shop" } };
      const err = (await probeStream(port.address, withCert(), node).catch((e: unknown) => e)) as grpc.ServiceError;
      expect(grpc.status[err.code]).to.equal("PERMISSION_DENIED");
      expect(err.details).to.equal(`certificate identity ${CART} does not match node metadata NAMESPACE=shop SERVICE_ACCOUNT=(unset) (node grpc-client-1)`);
    });

    it("refuses a TLS stream without a client certificate", async () => {
      const creds = securePortChannelCredentials({ rootCaPem: rootPem, expectedServerSan: SERVER_SAN });
      const err = (await probeStream(port.address, creds, sidecarNode("shop", "cart")).catch((e: unknown) => e)) as grpc.ServiceError;
      expect(grpc.status[err.code]).to.equal("UNAUTHENTICATED");
      expect(err.details).to.equal(
        "client certificate required: no verified client certificate (none presented, or not issued by this mesh's CA)",
      );
    });
  });

  it("with a plugged-in intermediate: enrol, renew by certificate and stream over mTLS through the full chain", async () => {
    const stateDir = newDir();
    const caDir = path.join(stateDir, "ca");
    fs.mkdirSync(caDir, { mode: 0o700 });
    const { rootPem: offlineRoot, intermediatePem, intermediateKeyPem } = await makeRootAndIntermediate();
    fs.writeFileSync(path.join(caDir, "ca-cert.pem"), intermediatePem);
    fs.writeFileSync(path.join(caDir, "ca-key.pem"), intermediateKeyPem, { mode: 0o600 });
    fs.writeFileSync(path.join(caDir, "root-cert.pem"), offlineRoot);
    const plugged = await startSecurePort({ stateDir, logger: captureLogger().logger });
    try {
      const common = { address: plugged.address, rootCaPem: offlineRoot, expectedServerSan: SERVER_SAN };
      const tok = await plugged.ca.tokens.create({ trustDomain: TD, namespace: "shop", serviceAccount: "cart" });
      const first = await generateKeyAndCsr(CART);
      const chain = await requestCertificate({ ...common, token: tok, csrPem: first.csrPem });
      expect(chain.map((c) => c.trim())).to.deep.equal([chain[0]!.trim(), intermediatePem.trim(), offlineRoot.trim()]);
      const wl = asWorkload(first.keyPem, chain);
      // The client presents leaf + intermediate; the server trusts only the offline root.
      const renewed = await requestCertificate({ ...common, csrPem: (await generateKeyAndCsr(CART)).csrPem, clientKeyCert: wl.clientKeyCert });
      expect(uriSans(renewed[0]!).uris).to.deep.equal([CART]);
      const creds = securePortChannelCredentials({ rootCaPem: offlineRoot, expectedServerSan: SERVER_SAN, clientKeyCert: wl.clientKeyCert });
      expect(await probeStream(plugged.address, creds, sidecarNode("shop", "cart"))).to.deep.equal({ accepted: sidecarNode("shop", "cart").id });
    } finally {
      await plugged.close();
    }
  });

  it("the port's own certificate rotates without a restart", async () => {
    const captured = captureLogger();
    const rotating = await startSecurePort({ stateDir: newDir(), servingTtlMs: 3000, logger: captured.logger });
    try {
      const peerSerial = () =>
        new Promise<string>((resolve, reject) => {
          const [host, p] = rotating.address.split(":") as [string, string];
          const s = tls.connect({
            host,
            port: Number(p),
            ca: rotating.ca.authority.rootCertPem,
            ALPNProtocols: ["h2"],
            servername: "localhost",
            checkServerIdentity: () => undefined,
          });
          s.once("secureConnect", () => {
            const serial = s.getPeerCertificate().serialNumber;
            s.destroy();
            resolve(serial);
          });
          s.once("error", reject);
        });
      const first = await peerSerial();
      expect(first.toLowerCase()).to.equal(rotating.ca.secure.current.serialNumber.toLowerCase());
      await until("a new serving certificate on new connections", async () => (await peerSerial()) !== first, 20_000);
      expect(captured.entries.some((e) => e.message === "renewed the secure port's serving certificate")).to.equal(true);
      // Still verifiable by an agent after the rotation.
      const tok = await rotating.ca.tokens.create({ trustDomain: TD, namespace: "shop", serviceAccount: "cart" });
      const chain = await requestCertificate({
        address: rotating.address,
        token: tok,
        csrPem: (await generateKeyAndCsr(CART)).csrPem,
        rootCaPem: rotating.ca.authority.rootCertPem,
        expectedServerSan: SERVER_SAN,
      });
      expect(chain).to.have.length(2);
    } finally {
      await rotating.close();
    }
  });
});
