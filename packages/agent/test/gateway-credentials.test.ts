// Gateway credentials (credentialName): NAME/{cert,key,ca}.pem in gateway.credentialsDir become the SDS secrets
// NAME and NAME-cacert (checked strictly against envoy.extensions.transport_sockets.tls.v3.Secret), handed to the
// agent's SDS server (a real SdsServer, read back through it); they follow the files as they change and never
// publish a half-written update. The socket side is proven in sds-server.test.ts.
import fs from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { decodeToJson, encodeJson } from "@vmpilot/xds/protojson";
import { xdsNode } from "../src/bootstrap/node.js";
import { parseAgentConfig } from "../src/config.js";
import { credentialSecrets, GatewayCredentials, missingCredentialHint, readCredential } from "../src/gateway-credentials.js";
import { SdsServer } from "../src/sds-server.js";
import { keyPair, memoryLogger, tmpDir, until } from "./helpers.js";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const SECRET = "envoy.extensions.transport_sockets.tls.v3.Secret";

function put(dir: string, name: string, files: Record<string, string>): void {
  fs.mkdirSync(path.join(dir, name), { recursive: true });
  for (const [f, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name, f), content);
}

describe("gateway credentials served as SDS secrets", function () {
  this.timeout(30_000);
  let base: string;
  let src: string;
  let legacy: string;
  let creds: GatewayCredentials | undefined;

  beforeEach(() => {
    base = tmpDir("vmpilot-gw-creds-");
    src = path.join(base, "credentials");
    legacy = path.join(base, "out", "credentials");
    fs.mkdirSync(src);
  });
  afterEach(async () => {
    await creds?.stop();
    creds = undefined;
    fs.rmSync(base, { recursive: true, force: true });
  });

  /** The secret as the SDS server would send it, decoded with the Envoy protos. */
  const servedBy = (sds: SdsServer, name: string): J | undefined => {
    const res = sds.secret(name);
    return res ? (decodeToJson(SECRET, res.bytes) as J) : undefined;
  };

  it("renders a credential as the Secrets NAME (certificate, key) and NAME-cacert, strictly valid Envoy Secrets", async () => {
    const { certPem, keyPem } = await keyPair("api.bookinfo.com");
    const ca = await keyPair("partner CA");
    const secrets = credentialSecrets({ name: "api-cert", certPem, keyPem, caPem: ca.certPem });
    const back = secrets.map((s) => decodeToJson(SECRET, encodeJson(SECRET, s)) as J);
    expect(back).to.deep.equal([
      { name: "api-cert", tls_certificate: { certificate_chain: { inline_string: certPem }, private_key: { inline_string: keyPem } } },
      { name: "api-cert-cacert", validation_context: { trusted_ca: { inline_string: ca.certPem } } },
    ]);
    expect(credentialSecrets({ name: "plain", certPem, keyPem }).map((s) => s.name)).to.deep.equal(["plain"]);
  });

  it("checks that the key belongs to the certificate", async () => {
    const a = await keyPair("a");
    const b = await keyPair("b");
    put(src, "mixed", { "cert.pem": a.certPem, "key.pem": b.keyPem });
    expect(await readCredential(path.join(src, "mixed"), "mixed")).to.equal("key.pem is not the key of the first certificate in cert.pem");
    put(src, "nokey", { "cert.pem": a.certPem });
    expect(await readCredential(path.join(src, "nokey"), "nokey")).to.equal("needs cert.pem and key.pem (missing key.pem)");
  });

  it("holds back a chain or CA file cut off inside a PEM block (a copy still being written), but takes text between blocks", async () => {
    const leaf = await keyPair("api.bookinfo.com");
    const inter = await keyPair("intermediate");
    const half = inter.certPem.slice(0, Math.floor(inter.certPem.length / 2));
    put(src, "cut", { "cert.pem": leaf.certPem + half, "key.pem": leaf.keyPem });
    expect(await readCredential(path.join(src, "cut"), "cut")).to.equal("cert.pem ends inside a PEM block (still being written?)");
    put(src, "cutca", { "cert.pem": leaf.certPem, "key.pem": leaf.keyPem, "ca.pem": half });
    expect(await readCredential(path.join(src, "cutca"), "cutca")).to.equal("ca.pem ends inside a PEM block (still being written?)");
    // What `openssl pkcs12 -nokeys` writes: attribute lines before each block.
    const bags = `Bag Attributes\n    friendlyName: api\nsubject=CN = api.bookinfo.com\n${leaf.certPem}Bag Attributes\n${inter.certPem}`;
    put(src, "bags", { "cert.pem": bags, "key.pem": leaf.keyPem });
    expect(await readCredential(path.join(src, "bags"), "bags")).to.deep.include({ name: "bags", certPem: bags });
  });

  it("tells the operator which files would provide a secret Envoy asks for", () => {
    expect(missingCredentialHint("/etc/vmpilot/credentials", "api-cert")).to.equal("expected /etc/vmpilot/credentials/api-cert/{cert.pem,key.pem}");
    expect(missingCredentialHint("/etc/vmpilot/credentials", "api-cert-cacert")).to.equal("expected /etc/vmpilot/credentials/api-cert/{ca.pem}");
    expect(missingCredentialHint("/etc/vmpilot/credentials", "kubernetes://api-cert")).to.match(/^"kubernetes:\/\/api-cert" cannot be a credential directory name/);
  });

  it("serves every complete credential directory, follows changes, holds back half-written updates, stops serving deleted ones", async () => {
    const v1 = await keyPair("api v1");
    const ca = await keyPair("ca");
    put(src, "api-cert", { "cert.pem": v1.certPem, "key.pem": v1.keyPem, "ca.pem": ca.certPem });
    put(src, "incomplete", { "cert.pem": v1.certPem });
    put(src, ".hidden", { "cert.pem": v1.certPem, "key.pem": v1.keyPem });
    // What an earlier agent left: file-based SDS with a private key. The socket next to it is not ours to touch.
    fs.mkdirSync(legacy, { recursive: true });
    fs.writeFileSync(path.join(legacy, "old-cert.sds.yaml"), "resources: []\n");
    fs.writeFileSync(path.join(legacy, "sds.sock"), "");
    const log = memoryLogger();
    const sds = new SdsServer({ logger: log });
    // A long rescan period: what follows must be noticed by the watcher, not the safety net.
    creds = new GatewayCredentials({ sourceDir: src, sds, legacySdsDir: legacy, logger: log, rescanMs: 600_000 });
    await creds.start();

    expect(fs.readdirSync(legacy)).to.deep.equal(["sds.sock"]);
    expect(sds.status().served).to.deep.equal(["api-cert", "api-cert-cacert"]);
    expect(servedBy(sds, "api-cert")!.tls_certificate.certificate_chain.inline_string).to.equal(v1.certPem);
    expect(servedBy(sds, "api-cert-cacert")!.validation_context.trusted_ca.inline_string).to.equal(ca.certPem);
    expect(creds.status()).to.deep.equal([
      { name: "api-cert", served: true, hasCa: true, notAfter: creds.status()[0]!.notAfter },
      { name: "incomplete", served: false, hasCa: false, problem: "needs cert.pem and key.pem (missing key.pem)" },
    ]);
    expect(log.lines.some((l) => l.includes("gateway credential incomplete: needs cert.pem and key.pem"))).to.equal(true);

    // Rotation by the operator's tooling: the certificate lands first, the key a moment later.
    const v2 = await keyPair("api v2");
    const served = () => servedBy(sds, "api-cert")!.tls_certificate;
    fs.writeFileSync(path.join(src, "api-cert", "cert.pem"), v2.certPem);
    await until("the half-written update to be seen", () => creds!.status()[0]!.problem === "key.pem is not the key of the first certificate in cert.pem");
    expect(served().certificate_chain.inline_string).to.equal(v1.certPem); // still the working pair
    fs.writeFileSync(path.join(src, "api-cert", "key.pem"), v2.keyPem);
    await until("the new pair to be served", () => served().certificate_chain.inline_string === v2.certPem);
    expect(served().private_key.inline_string).to.equal(v2.keyPem);
    expect(creds.status()[0]!.problem).to.equal(undefined);

    // A new credential appears; the CA of the first is withdrawn; then the first is deleted altogether.
    put(src, "second", { "cert.pem": v1.certPem, "key.pem": v1.keyPem });
    await until("the new credential to be served", () => sds.secret("second"));
    fs.rmSync(path.join(src, "api-cert", "ca.pem"));
    await until("the withdrawn CA to stop being served", () => !sds.secret("api-cert-cacert"));
    fs.rmSync(path.join(src, "api-cert"), { recursive: true });
    await until("the deleted credential to stop being served", () => !sds.secret("api-cert"));
    expect(sds.status().served).to.deep.equal(["second"]);
    expect(log.lines.some((l) => l.includes("gateway credential api-cert: its directory is gone; secret api-cert is no longer served"))).to.equal(true);
  });

  it("announces the agent's SDS cluster in a gateway's node metadata only", () => {
    const yaml = (kind: string) =>
      `name: gw-1\nnamespace: istio-system\nserviceAccount: ingress\naddress: 10.0.0.9\nproxy: {kind: ${kind}}\ncontrolPlane: {address: "cp:15012", tokenFile: /t, rootCertFile: /r}\noutput: {dir: /var/lib/vmpilot/agent}\ngateway: {credentialsDir: /etc/vmpilot/credentials}\n`;
    const gw = parseAgentConfig(yaml("gateway"), "agent.yaml");
    expect(gw.gateway.credentialsDir).to.equal("/etc/vmpilot/credentials");
    expect(xdsNode(gw, "gateway").metadata.CREDENTIAL_SDS_CLUSTER).to.equal("sds-grpc");
    expect(xdsNode(gw, "gateway").metadata).not.to.have.property("CREDENTIAL_SDS_DIR");
    expect(xdsNode(parseAgentConfig(yaml("envoy"), "agent.yaml"), "sidecar").metadata.CREDENTIAL_SDS_CLUSTER).to.equal(undefined);
  });
});
