// Gateway credentials (credentialName) served by the agent as file-based SDS: NAME/{cert,key,ca}.pem in
// gateway.credentialsDir become NAME.sds.yaml / NAME-cacert.sds.yaml that decode strictly as Envoy
// DiscoveryResponses, follow the files as they change, and never publish a half-written update.
import fs from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { parse as parseYaml } from "yaml";
import { decodeToJson, encodeJson } from "@vmpilot/xds/protojson";
import { xdsNode } from "../src/bootstrap/node.js";
import { parseAgentConfig } from "../src/config.js";
import { credentialSdsFiles, GatewayCredentials, readCredential } from "../src/gateway-credentials.js";
import { keyPair, memoryLogger, tmpDir, until } from "./helpers.js";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A file-based SDS document, checked strictly against envoy.service.discovery.v3.DiscoveryResponse. */
function decodeSds(file: string): J {
  const doc = parseYaml(fs.readFileSync(file, "utf8"));
  return decodeToJson("envoy.service.discovery.v3.DiscoveryResponse", encodeJson("envoy.service.discovery.v3.DiscoveryResponse", doc)) as J;
}

function put(dir: string, name: string, files: Record<string, string>): void {
  fs.mkdirSync(path.join(dir, name), { recursive: true });
  for (const [f, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name, f), content);
}

describe("gateway credentials as file-based SDS", function () {
  this.timeout(30_000);
  let base: string;
  let src: string;
  let out: string;
  let creds: GatewayCredentials | undefined;

  beforeEach(() => {
    base = tmpDir("vmpilot-gw-creds-");
    src = path.join(base, "credentials");
    out = path.join(base, "out", "credentials");
    fs.mkdirSync(src);
  });
  afterEach(async () => {
    await creds?.stop();
    creds = undefined;
    fs.rmSync(base, { recursive: true, force: true });
  });

  it("renders a credential as DiscoveryResponses with one Secret each: NAME (certificate, key) and NAME-cacert", async () => {
    const { certPem, keyPem } = await keyPair("api.bookinfo.com");
    const ca = await keyPair("partner CA");
    const files = credentialSdsFiles({ name: "api-cert", certPem, keyPem, caPem: ca.certPem });
    expect([...files.keys()]).to.deep.equal(["api-cert.sds.yaml", "api-cert-cacert.sds.yaml"]);
    expect(files.get("api-cert.sds.yaml")!.mode).to.equal(0o600);
    for (const [name, { content }] of files) fs.writeFileSync(path.join(base, name), content);
    const tls = decodeSds(path.join(base, "api-cert.sds.yaml"));
    expect(tls.resources).to.have.length(1);
    expect(tls.resources[0]).to.deep.include({ "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", name: "api-cert" });
    expect(tls.resources[0].tls_certificate).to.deep.equal({ certificate_chain: { inline_string: certPem }, private_key: { inline_string: keyPem } });
    const cacert = decodeSds(path.join(base, "api-cert-cacert.sds.yaml"));
    expect(cacert.resources[0]).to.deep.include({ name: "api-cert-cacert", validation_context: { trusted_ca: { inline_string: ca.certPem } } });
  });

  it("checks that the key belongs to the certificate", async () => {
    const a = await keyPair("a");
    const b = await keyPair("b");
    put(src, "mixed", { "cert.pem": a.certPem, "key.pem": b.keyPem });
    expect(await readCredential(path.join(src, "mixed"), "mixed")).to.equal("key.pem is not the key of the first certificate in cert.pem");
    put(src, "nokey", { "cert.pem": a.certPem });
    expect(await readCredential(path.join(src, "nokey"), "nokey")).to.equal("needs cert.pem and key.pem (missing key.pem)");
  });

  it("serves every complete credential directory, follows changes, holds back half-written updates, removes deleted ones", async () => {
    const v1 = await keyPair("api v1");
    const ca = await keyPair("ca");
    put(src, "api-cert", { "cert.pem": v1.certPem, "key.pem": v1.keyPem, "ca.pem": ca.certPem });
    put(src, "incomplete", { "cert.pem": v1.certPem });
    put(src, ".hidden", { "cert.pem": v1.certPem, "key.pem": v1.keyPem });
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, "stale.sds.yaml"), "resources: []\n"); // from a run before the credential was deleted
    const log = memoryLogger();
    // A long rescan period: what follows must be noticed by the watcher, not the safety net.
    creds = new GatewayCredentials({ sourceDir: src, sdsDir: out, logger: log, rescanMs: 600_000 });
    await creds.start();

    expect(fs.readdirSync(out).sort()).to.deep.equal(["api-cert-cacert.sds.yaml", "api-cert.sds.yaml"]);
    expect(fs.statSync(path.join(out, "api-cert.sds.yaml")).mode & 0o777).to.equal(0o600);
    expect(fs.statSync(out).mode & 0o777).to.equal(0o700);
    expect(decodeSds(path.join(out, "api-cert.sds.yaml")).resources[0].tls_certificate.certificate_chain.inline_string).to.equal(v1.certPem);
    expect(creds.status()).to.deep.equal([
      { name: "api-cert", served: true, hasCa: true, notAfter: creds.status()[0]!.notAfter },
      { name: "incomplete", served: false, hasCa: false, problem: "needs cert.pem and key.pem (missing key.pem)" },
    ]);
    expect(log.lines.some((l) => l.includes("gateway credential incomplete: needs cert.pem and key.pem"))).to.equal(true);

    // Rotation by the operator's tooling: the certificate lands first, the key a moment later.
    const v2 = await keyPair("api v2");
    const served = () => decodeSds(path.join(out, "api-cert.sds.yaml")).resources[0].tls_certificate;
    fs.writeFileSync(path.join(src, "api-cert", "cert.pem"), v2.certPem);
    await until("the half-written update to be seen", () => creds!.status()[0]!.problem === "key.pem is not the key of the first certificate in cert.pem");
    expect(served().certificate_chain.inline_string).to.equal(v1.certPem); // still the working pair
    fs.writeFileSync(path.join(src, "api-cert", "key.pem"), v2.keyPem);
    await until("the new pair to be served", () => served().certificate_chain.inline_string === v2.certPem);
    expect(served().private_key.inline_string).to.equal(v2.keyPem);
    expect(creds.status()[0]!.problem).to.equal(undefined);

    // A new credential appears; the CA of the first is withdrawn; then the first is deleted altogether.
    put(src, "second", { "cert.pem": v1.certPem, "key.pem": v1.keyPem });
    await until("the new credential to be served", () => fs.existsSync(path.join(out, "second.sds.yaml")));
    fs.rmSync(path.join(src, "api-cert", "ca.pem"));
    await until("the withdrawn CA to be removed", () => !fs.existsSync(path.join(out, "api-cert-cacert.sds.yaml")));
    fs.rmSync(path.join(src, "api-cert"), { recursive: true });
    await until("the deleted credential's files to be removed", () => !fs.existsSync(path.join(out, "api-cert.sds.yaml")));
    expect(fs.readdirSync(out).filter((f) => !f.startsWith("."))).to.deep.equal(["second.sds.yaml"]);
  });

  it("announces the SDS directory in a gateway's node metadata only", () => {
    const yaml = (kind: string) =>
      `name: gw-1\nnamespace: istio-system\nserviceAccount: ingress\naddress: 10.0.0.9\nproxy: {kind: ${kind}}\ncontrolPlane: {address: "cp:15012", tokenFile: /t, rootCertFile: /r}\noutput: {dir: /var/lib/vmpilot/agent}\ngateway: {credentialsDir: /etc/vmpilot/credentials}\n`;
    const gw = parseAgentConfig(yaml("gateway"), "agent.yaml");
    expect(gw.gateway.credentialsDir).to.equal("/etc/vmpilot/credentials");
    expect(xdsNode(gw, "gateway").metadata.CREDENTIAL_SDS_DIR).to.equal("/var/lib/vmpilot/agent/credentials");
    expect(xdsNode(parseAgentConfig(yaml("envoy"), "agent.yaml"), "sidecar").metadata.CREDENTIAL_SDS_DIR).to.equal(undefined);
  });
});
