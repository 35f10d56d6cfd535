// The CA's signing material on disk (generated once and kept, or plugged in) and the shape of what it issues.
import fs from "node:fs";
import path from "node:path";
import * as x509 from "@peculiar/x509";
import { expect } from "chai";
import { CaConfigError, CertificateAuthority, controlPlaneSpiffeId } from "../src/ca/authority.js";
import { generateKeyAndCsr, parseCsr } from "../src/ca/csr.js";
import { KeyFileError } from "../src/ca/keys.js";
import { captureLogger, makeRootAndIntermediate, nodeCert, tmpDir, uriSans, verifyChain } from "./ca-fixtures.js";

const TD = "example.org";
const quiet = () => captureLogger().logger;
const mode = (p: string) => fs.statSync(p).mode & 0o777;

describe("CertificateAuthority", function () {
  this.timeout(30_000);
  const dirs: string[] = [];
  const newDir = (p = "vmpilot-ca-") => {
    const d = tmpDir(p);
    dirs.push(d);
    return d;
  };
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  async function leafFor(ca: CertificateAuthority, id: string, ttlMs?: number) {
    const { csrPem } = await generateKeyAndCsr(id);
    const csr = await parseCsr(csrPem);
    return ca.issue({ publicKey: csr.publicKey, spiffeId: csr.spiffeId, ...(ttlMs !== undefined ? { ttlMs } : {}) });
  }

  describe("generated root", () => {
    it("is created once with a 0600 key in a 0700 directory and reused on restart", async () => {
      const dir = path.join(newDir(), "ca");
      const first = await CertificateAuthority.load({ dir, trustDomain: TD, logger: quiet() });
      expect(first.mode).to.equal("generated");
      expect(mode(dir)).to.equal(0o700);
      expect(mode(path.join(dir, "root-key.pem"))).to.equal(0o600);
      expect(fs.readFileSync(path.join(dir, "root-cert.pem"), "utf8")).to.equal(first.rootCertPem);
      const root = nodeCert(first.rootCertPem);
      expect(root.ca).to.equal(true);
      expect(root.subject).to.include(`O=${TD}`);

      const keyBefore = fs.readFileSync(path.join(dir, "root-key.pem"), "utf8");
      const second = await CertificateAuthority.load({ dir, trustDomain: TD, logger: quiet() });
      expect(second.rootCertPem).to.equal(first.rootCertPem);
      expect(fs.readFileSync(path.join(dir, "root-key.pem"), "utf8")).to.equal(keyBefore);
      // And the reloaded key really is the one that signs: a new leaf verifies against the first root.
      const leaf = await leafFor(second, `spiffe://${TD}/ns/a/sa/b`);
      expect(nodeCert(leaf.certPem).verify(root.publicKey)).to.equal(true);
    });

    it("refuses to start when the root key is readable by group or others", async () => {
      const dir = path.join(newDir(), "ca");
      await CertificateAuthority.load({ dir, trustDomain: TD, logger: quiet() });
      const keyFile = path.join(dir, "root-key.pem");
      fs.chmodSync(keyFile, 0o640);
      const err = await CertificateAuthority.load({ dir, trustDomain: TD, logger: quiet() }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(KeyFileError);
      expect((err as Error).message).to.equal(
        `${keyFile} has mode 0640: a private key must not be accessible to group or others; run chmod 600 ${keyFile}`,
      );
    });

    it("refuses a root certificate without its key instead of generating over it", async () => {
      const dir = path.join(newDir(), "ca");
      await CertificateAuthority.load({ dir, trustDomain: TD, logger: quiet() });
      fs.rmSync(path.join(dir, "root-key.pem"));
      const err = await CertificateAuthority.load({ dir, trustDomain: TD, logger: quiet() }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(CaConfigError);
      expect((err as Error).message).to.match(/root-cert\.pem exists but .*root-key\.pem does not/);
      expect(fs.existsSync(path.join(dir, "root-key.pem"))).to.equal(false);
    });
  });

  describe("leaf certificates", () => {
    let ca: CertificateAuthority;
    let dir: string;
    before(async () => {
      dir = newDir();
      ca = await CertificateAuthority.load({ dir: path.join(dir, "ca"), trustDomain: TD, leafTtlMs: 2 * 3600_000, logger: quiet() });
    });

    it("carry only the SPIFFE URI SAN (critical, empty subject), P-256, serverAuth+clientAuth, AKI/SKI", async () => {
      const id = `spiffe://${TD}/ns/shop/sa/cart`;
      const leaf = await leafFor(ca, id);
      expect(leaf.chainPem).to.have.length(2);
      verifyChain(leaf.chainPem, ca.rootCertPem, dir);

      const sans = uriSans(leaf.certPem);
      expect(sans.all.map((n) => `${n.type}:${n.value}`)).to.deep.equal([`url:${id}`]);
      expect(sans.critical).to.equal(true);
      const cert = new x509.X509Certificate(leaf.certPem);
      expect(cert.subject).to.equal("");
      expect(cert.publicKey.algorithm).to.include({ name: "ECDSA", namedCurve: "P-256" });
      expect(cert.getExtension(x509.BasicConstraintsExtension)?.ca).to.equal(false);
      const ku = cert.getExtension(x509.KeyUsagesExtension)!;
      expect(ku.usages).to.equal(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
      expect(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages).to.deep.equal([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]);
      const root = new x509.X509Certificate(ca.rootCertPem);
      expect(cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).to.equal(
        root.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
      );
      expect(cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).to.be.a("string").with.length.greaterThan(0);
    });

    it("honour a shorter requested lifetime and cap a longer one at the configured maximum", async () => {
      const id = `spiffe://${TD}/ns/shop/sa/cart`;
      const t0 = Date.now();
      const short = await leafFor(ca, id, 600_000);
      expect(short.notAfter.getTime()).to.be.closeTo(t0 + 600_000, 5_000);
      const long = await leafFor(ca, id, 48 * 3600_000);
      expect(long.notAfter.getTime()).to.be.closeTo(t0 + 2 * 3600_000, 5_000);
      const dflt = await leafFor(ca, id);
      expect(dflt.notAfter.getTime()).to.be.closeTo(t0 + 2 * 3600_000, 5_000);
      // Backdated a little for clock skew, never by more than a tenth of the lifetime.
      const seconds = await leafFor(ca, id, 10_000);
      expect(seconds.notAfter.getTime() - seconds.notBefore.getTime()).to.be.at.most(11_000 + 1_000);
    });

    it("use random serial numbers", async () => {
      const id = `spiffe://${TD}/ns/shop/sa/cart`;
      const serials = new Set<string>();
      for (let i = 0; i < 5; i++) serials.add((await leafFor(ca, id)).serialNumber);
      expect(serials.size).to.equal(5);
    });

    it("the control plane's serving certificate names vmpilot-system/vmpilot plus its DNS names and IPs", async () => {
      const serving = await ca.issueServingCertificate({ dnsNames: ["vmpilot.vmpilot-system.svc", "localhost"], ipAddresses: ["127.0.0.1"] });
      const names = uriSans(serving.certPem).all.map((n) => `${n.type}:${n.value}`);
      expect(names).to.deep.equal([
        `url:${controlPlaneSpiffeId(TD)}`,
        "dns:vmpilot.vmpilot-system.svc",
        "dns:localhost",
        "ip:127.0.0.1",
      ]);
      expect(controlPlaneSpiffeId(TD)).to.equal(`spiffe://${TD}/ns/vmpilot-system/sa/vmpilot`);
      expect(nodeCert(serving.certPem).checkPrivateKey(await import("node:crypto").then((c) => c.createPrivateKey(serving.keyPem)))).to.equal(true);
    });
  });

  describe("plugged-in root and intermediate", () => {
    it("signs with the intermediate and returns leaf, intermediate, root", async () => {
      const base = newDir();
      const dir = path.join(base, "ca");
      fs.mkdirSync(dir, { mode: 0o700 });
      const { rootPem, intermediatePem, intermediateKeyPem } = await makeRootAndIntermediate();
      fs.writeFileSync(path.join(dir, "ca-cert.pem"), intermediatePem);
      fs.writeFileSync(path.join(dir, "ca-key.pem"), intermediateKeyPem, { mode: 0o600 });
      fs.writeFileSync(path.join(dir, "root-cert.pem"), rootPem);
      // Istio's cert-chain.pem repeats the intermediate and the root; both forms must work.
      fs.writeFileSync(path.join(dir, "cert-chain.pem"), intermediatePem + rootPem);

      const { logger, entries } = captureLogger();
      const ca = await CertificateAuthority.load({ dir, trustDomain: TD, logger });
      expect(ca.mode).to.equal("plugged-in");
      expect(ca.rootCertPem.trim()).to.equal(rootPem.trim());
      expect(fs.existsSync(path.join(dir, "root-key.pem")), "no root generated next to a plugged-in CA").to.equal(false);
      expect(entries.map((e) => e.message)).to.include("using the operator-provided CA");

      const leaf = await leafFor(ca, `spiffe://${TD}/ns/shop/sa/cart`);
      expect(leaf.chainPem.map((p) => p.trim())).to.deep.equal([leaf.certPem.trim(), intermediatePem.trim(), rootPem.trim()]);
      const out = verifyChain(leaf.chainPem, rootPem, base);
      if (out.startsWith("openssl not installed")) console.log(`      (${out})`);
      else expect(out).to.match(/: OK$/);
      expect(nodeCert(leaf.certPem).issuer).to.include("CN=vmpilot intermediate");
    });

    it("refuses an incomplete plug-in, a mismatched key and an intermediate that does not chain to the root", async () => {
      const { rootPem, intermediatePem, intermediateKeyPem } = await makeRootAndIntermediate();
      const other = await makeRootAndIntermediate();
      const setup = (files: Record<string, string>) => {
        const dir = path.join(newDir(), "ca");
        fs.mkdirSync(dir, { mode: 0o700 });
        for (const [n, data] of Object.entries(files)) fs.writeFileSync(path.join(dir, n), data, { mode: 0o600 });
        return dir;
      };
      const failure = async (dir: string) =>
        ((await CertificateAuthority.load({ dir, trustDomain: TD, logger: quiet() }).catch((e: unknown) => e)) as Error).message;

      let dir = setup({ "ca-cert.pem": intermediatePem, "root-cert.pem": rootPem });
      expect(await failure(dir)).to.equal(
        `${path.join(dir, "ca-key.pem")} is missing: a plugged-in CA needs ca-cert.pem, ca-key.pem and root-cert.pem (and optionally cert-chain.pem)`,
      );
      dir = setup({ "ca-cert.pem": intermediatePem, "ca-key.pem": other.intermediateKeyPem, "root-cert.pem": rootPem });
      expect(await failure(dir)).to.equal(`${path.join(dir, "ca-key.pem")} is not the private key of ${path.join(dir, "ca-cert.pem")}`);
      dir = setup({ "ca-cert.pem": intermediatePem, "ca-key.pem": intermediateKeyPem, "root-cert.pem": other.rootPem });
      expect(await failure(dir)).to.match(/ca-cert\.pem does not chain to .*root-cert\.pem: no issuer of "O=example corp, CN=offline root"/);
    });
  });
});
