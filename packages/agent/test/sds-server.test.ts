// The agent's SDS server over its real unix socket, driven by a real @grpc/grpc-js client built from the Envoy
// SDS service definition in @grpc/grpc-js-xds's deps/ protos (loaded by @grpc/proto-loader, nothing hand-written),
// serving what GatewayCredentials finds in a real directory (chokidar). Secrets in responses are decoded
// strictly with the Envoy protos. Every wait polls with a deadline; no fixed sleeps.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { GatewayCredentials, missingCredentialHint } from "../src/gateway-credentials.js";
import { SdsServer } from "../src/sds-server.js";
import { keyPair, memoryLogger, tmpDir, until } from "./helpers.js";
import { NODE, SECRET_TYPE_URL, SdsTestStream as Stream, sdsClientConstructor, secretNames as names, type J } from "./sds-client.js";

function put(dir: string, name: string, files: Record<string, string>): void {
  fs.mkdirSync(path.join(dir, name), { recursive: true });
  for (const [f, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name, f), content);
}

describe("agent SDS server (envoy.service.secret.v3.SecretDiscoveryService on a unix socket)", function () {
  this.timeout(60_000);
  const Client = sdsClientConstructor();
  let base: string;
  let src: string;
  let socket: string;
  let sds: SdsServer;
  let creds: GatewayCredentials;
  let client: grpc.Client;
  let log: ReturnType<typeof memoryLogger>;
  const streams: Stream[] = [];

  beforeEach(async () => {
    base = tmpDir("vmpilot-sds-");
    src = path.join(base, "credentials");
    socket = path.join(base, "out", "credentials", "sds.sock");
    fs.mkdirSync(src);
    log = memoryLogger();
    sds = new SdsServer({ logger: log, missingHint: (n) => missingCredentialHint(src, n) });
    await sds.listen(socket);
    // A long rescan period: what follows must be noticed by the watcher, not by the safety net.
    creds = new GatewayCredentials({ sourceDir: src, sds, logger: log, rescanMs: 600_000 });
    client = new Client(`unix://${socket}`, grpc.credentials.createInsecure());
  });

  afterEach(async () => {
    for (const s of streams.splice(0)) s.call.cancel();
    client.close();
    await creds.stop();
    await sds.close();
    fs.rmSync(base, { recursive: true, force: true });
  });

  function sotw(): Stream {
    const s = new Stream((client as J).StreamSecrets());
    streams.push(s);
    return s;
  }

  function delta(): Stream {
    const s = new Stream((client as J).DeltaSecrets());
    streams.push(s);
    return s;
  }

  it("listens on a socket only the agent's user can reach (socket 0600 in a 0700 directory), replacing a stale one", async () => {
    expect(fs.statSync(socket).isSocket()).to.equal(true);
    expect(fs.statSync(socket).mode & 0o777).to.equal(0o600);
    expect(fs.statSync(path.dirname(socket)).mode & 0o777).to.equal(0o700);
    // A crash leaves the socket file behind: the next agent binds anyway. (Directory created loose on purpose.)
    const other = new SdsServer({ logger: memoryLogger() });
    const otherSocket = path.join(base, "other", "sds.sock");
    fs.mkdirSync(path.dirname(otherSocket), { mode: 0o755 });
    fs.writeFileSync(otherSocket, "stale");
    await other.listen(otherSocket);
    try {
      expect(fs.statSync(otherSocket).isSocket()).to.equal(true);
      expect(fs.statSync(path.dirname(otherSocket)).mode & 0o777).to.equal(0o700);
    } finally {
      await other.close();
    }
    expect(fs.existsSync(otherSocket)).to.equal(false);
  });

  it("SotW: serves only what exists, delivers a credential when its files appear, re-sends only on change, stops after a NACK, rotates, and stops serving a removed one", async () => {
    const present = await keyPair("api.example.com");
    const third = await keyPair("third.example.com");
    put(src, "present", { "cert.pem": present.certPem, "key.pem": present.keyPem });
    put(src, "third", { "cert.pem": third.certPem, "key.pem": third.keyPem });
    await creds.start();

    const s = sotw();
    s.send({ node: NODE, resource_names: ["present", "missing"] });
    const r1 = await s.next("the first response");
    expect(r1.type_url).to.equal(SECRET_TYPE_URL);
    expect(names(r1)).to.deep.equal(["present"]);
    expect(r1.secrets[0]!.tls_certificate).to.deep.equal({ certificate_chain: { inline_string: present.certPem }, private_key: { inline_string: present.keyPem } });
    expect(r1.nonce).to.not.equal("");
    await until("the missing secret to be logged", () => log.lines.some((l) => l.includes(`Envoy asks for secret "missing", which is not served (expected ${src}/missing/{cert.pem,key.pem})`)));

    // ACK; then the missing credential's files appear: pushed within 2 s, and nothing else is re-sent.
    s.send({ version_info: r1.version_info, response_nonce: r1.nonce, resource_names: ["present", "missing"] });
    const firstPresentVersion = await until("the ACK to be recorded", () => sds.status().streams[0]?.acked.present);
    // Once per name, not on every request that restates it.
    expect(log.lines.filter((l) => l.includes('Envoy asks for secret "missing"'))).to.have.length(1);
    const missing = await keyPair("missing.example.com");
    const ca = await keyPair("client CA");
    put(src, "missing", { "cert.pem": missing.certPem, "key.pem": missing.keyPem, "ca.pem": ca.certPem });
    // The watcher's debounce is 100 ms; the deadline leaves room for a loaded CI machine.
    const r2 = await s.next("the missing credential to be pushed", 5_000);
    expect(names(r2)).to.deep.equal(["missing"]);
    expect(r2.secrets[0]!.tls_certificate.certificate_chain.inline_string).to.equal(missing.certPem);
    expect(r2.nonce).to.not.equal(r1.nonce);
    expect(r2.version_info).to.not.equal(r1.version_info);

    // Subscribing to the CA secret as well gets just that one.
    s.send({ version_info: r2.version_info, response_nonce: r2.nonce, resource_names: ["present", "missing", "missing-cacert"] });
    const r3 = await s.next("the CA secret");
    expect(r3.secrets).to.deep.equal([{ name: "missing-cacert", validation_context: { trusted_ca: { inline_string: ca.certPem } } }]);
    s.send({ version_info: r3.version_info, response_nonce: r3.nonce, resource_names: ["present", "missing", "missing-cacert"] });

    // Rotation by the operator's tooling (certificate first, key a moment later): one push, with the new pair.
    const v2 = await keyPair("api.example.com v2");
    fs.writeFileSync(path.join(src, "present", "cert.pem"), v2.certPem);
    fs.writeFileSync(path.join(src, "present", "key.pem"), v2.keyPem);
    const r4 = await s.next("the rotated certificate");
    expect(names(r4)).to.deep.equal(["present"]);
    expect(r4.secrets[0]!.tls_certificate.certificate_chain.inline_string).to.equal(v2.certPem);
    expect(r4.secrets[0]!.tls_certificate.private_key.inline_string).to.equal(v2.keyPem);

    // NACK: logged, and the rejected content is not offered again. The next response (for a new subscription)
    // carries only the newly subscribed secret.
    s.send({ version_info: r3.version_info, response_nonce: r4.nonce, resource_names: ["present", "missing", "missing-cacert"], error_detail: { code: 3, message: "bad certificate" } });
    await until("the NACK to be logged", () => log.lines.some((l) => l === "warn: SDS: Envoy rejected secret(s) present: bad certificate; not re-sent until their content changes"));
    s.send({ version_info: r3.version_info, response_nonce: r4.nonce, resource_names: ["present", "missing", "missing-cacert", "third"] });
    const r5 = await s.next("the newly subscribed secret");
    expect(names(r5)).to.deep.equal(["third"]);
    s.send({ version_info: r5.version_info, response_nonce: r5.nonce, resource_names: ["present", "missing", "missing-cacert", "third"] });
    const st = await until("the ACK of the new subscription", () => {
      const status = sds.status().streams[0]!;
      return status.acked.third ? status : undefined;
    });
    expect(st.lastNack).to.deep.equal({ names: ["present"], message: "bad certificate" });
    // `present` stays ACKed at the version before the rejected one: what Envoy still uses.
    expect(st.acked.present).to.equal(firstPresentVersion);
    expect(Object.keys(st.acked).sort()).to.deep.equal(["missing", "missing-cacert", "present", "third"]);

    // Removal: the credential is no longer served. Streams holding it get nothing (Envoy keeps its copy until the
    // listener goes; SDS has no removal): the next thing this stream receives is an unrelated change.
    fs.rmSync(path.join(src, "missing"), { recursive: true });
    await until("the removed credential to stop being served", () => !sds.status().served.includes("missing"));
    expect(log.lines.some((l) => l.includes("gateway credential missing: its directory is gone; secret missing is no longer served"))).to.equal(true);
    const t2 = await keyPair("third v2");
    fs.writeFileSync(path.join(src, "third", "key.pem"), t2.keyPem);
    fs.writeFileSync(path.join(src, "third", "cert.pem"), t2.certPem);
    const r6 = await s.next("the next change after the removal");
    expect(names(r6)).to.deep.equal(["third"]);
    // A new subscription (a new listener, a restarted Envoy) does not get it.
    const fresh = sotw();
    fresh.send({ node: NODE, resource_names: ["missing", "present"] });
    expect(names(await fresh.next("a fresh stream's first response"))).to.deep.equal(["present"]);
    expect(sds.status().missing).to.deep.equal(["missing", "missing-cacert"]);
  });

  it("SotW: an unsubscribed secret is sent again when subscribed again; several streams are served independently", async () => {
    const a = await keyPair("a");
    put(src, "a", { "cert.pem": a.certPem, "key.pem": a.keyPem });
    await creds.start();
    const s1 = sotw();
    const s2 = sotw();
    s1.send({ node: NODE, resource_names: ["a"] });
    s2.send({ node: NODE, resource_names: ["a"] });
    const r1 = await s1.next("s1 first");
    const r2 = await s2.next("s2 first");
    expect(names(r1)).to.deep.equal(["a"]);
    expect(names(r2)).to.deep.equal(["a"]);
    s1.send({ version_info: r1.version_info, response_nonce: r1.nonce, resource_names: [] });
    s1.send({ version_info: r1.version_info, response_nonce: r1.nonce, resource_names: ["a"] });
    expect(names(await s1.next("s1 again after re-subscribing"))).to.deep.equal(["a"]);
    expect(s2.pending).to.equal(0);
  });

  it("delta: honours initial_resource_versions, subscribe and unsubscribe, ACK and NACK", async () => {
    const present = await keyPair("present");
    put(src, "present", { "cert.pem": present.certPem, "key.pem": present.keyPem });
    await creds.start();

    const first = delta();
    first.send({ node: NODE, resource_names_subscribe: ["present"] });
    const d1 = await first.next("the first delta response");
    expect(names(d1)).to.deep.equal(["present"]);
    const version = d1.versions.present!;
    expect(version).to.match(/^[0-9a-f]{16}$/);
    expect(d1.removed).to.deep.equal([]);
    first.send({ response_nonce: d1.nonce });

    // A reconnecting Envoy that already holds `present` at this version is not sent it again: the first response
    // on the new stream is the missing credential, when it appears.
    const again = delta();
    again.send({ node: NODE, resource_names_subscribe: ["present", "later"], initial_resource_versions: { present: version } });
    const later = await keyPair("later");
    put(src, "later", { "cert.pem": later.certPem, "key.pem": later.keyPem });
    const d2 = await again.next("the credential that appeared");
    expect(names(d2)).to.deep.equal(["later"]);
    again.send({ response_nonce: d2.nonce, error_detail: { code: 13, message: "nope" } });
    await until("the delta NACK to be logged", () => log.lines.some((l) => l.includes("Envoy rejected secret(s) later: nope")));

    // Unsubscribed names are not pushed, even when they change; subscribed ones are.
    again.send({ resource_names_unsubscribe: ["later"] });
    await until("the unsubscription to be recorded", () => !sds.status().streams.some((st) => st.requested.includes("later")));
    const later2 = await keyPair("later v2");
    put(src, "later", { "cert.pem": later2.certPem, "key.pem": later2.keyPem });
    await until("the new pair of the unsubscribed credential to be served", () => sds.secret("later")?.version !== d2.versions.later);
    const p2 = await keyPair("present v2");
    fs.writeFileSync(path.join(src, "present", "key.pem"), p2.keyPem);
    fs.writeFileSync(path.join(src, "present", "cert.pem"), p2.certPem);
    const d3 = await again.next("the rotated credential");
    expect(names(d3)).to.deep.equal(["present"]);
    expect(d3.versions.present).to.not.equal(version);
    expect(d3.secrets[0]!.tls_certificate.certificate_chain.inline_string).to.equal(p2.certPem);
    again.send({ response_nonce: d3.nonce });

    // A removed credential is never sent as a delta removal (Envoy ignores or NACKs one; it keeps the secret until
    // the listener goes): after `present` is deleted, the next response is the resubscribed `later`, with no removals.
    fs.rmSync(path.join(src, "present"), { recursive: true });
    await until("the deleted credential to stop being served", () => !sds.status().served.includes("present"));
    again.send({ resource_names_subscribe: ["later"] });
    const d4 = await again.next("the resubscribed credential");
    expect(names(d4)).to.deep.equal(["later"]);
    expect(d4.removed).to.deep.equal([]);
  });

  it("ends a stream that asks for another resource type with INVALID_ARGUMENT", async () => {
    await creds.start();
    const s = new Stream((client as J).StreamSecrets());
    streams.push(s);
    s.call.write({ node: NODE, type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster", resource_names: ["x"] });
    const status = await until("the stream to end", () => s.ended);
    expect(status.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(status.details).to.match(/StreamSecrets serves type.googleapis.com\/envoy.extensions.transport_sockets.tls.v3.Secret/);
  });
});
