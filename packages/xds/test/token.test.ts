// Bootstrap tokens: minted and verified with the state dir's key; every way a token can be wrong is named.
// The CLI test runs the real `vmpilot token create` and redeems its output at a real CA over mTLS gRPC.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as jose from "jose";
import { expect } from "chai";
import { controlPlaneSpiffeId } from "../src/ca/authority.js";
import { requestCertificate } from "../src/ca/client.js";
import { generateKeyAndCsr } from "../src/ca/csr.js";
import { TokenAuthority, TokenError } from "../src/ca/tokens.js";
import { until } from "../../../test/helpers/poll.js";
import { captureLogger, startSecurePort, tmpDir, uriSans } from "./ca-fixtures.js";

const TD = "cluster.local";
const REPO = fileURLToPath(new URL("../../../", import.meta.url));

/** Runs the real `vmpilot` CLI from source, as `npx vmpilot` would (minus the build). */
function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--conditions=vmpilot-source", "--import", "tsx", "packages/xds/src/cli.ts", ...args], {
      cwd: REPO,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  const r = await p.then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  if (!r) throw new Error("expected a rejection");
  return r;
}

describe("bootstrap tokens", function () {
  this.timeout(30_000);
  const dirs: string[] = [];
  const newDir = () => {
    const d = tmpDir("vmpilot-token-");
    dirs.push(d);
    return d;
  };
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it("signing key is created once (0600) and shared by every instance on the same state dir", async () => {
    const dir = newDir();
    const a = await TokenAuthority.load({ stateDir: dir });
    const keyFile = path.join(dir, "tokens", "signing-key.pem");
    expect(fs.statSync(keyFile).mode & 0o777).to.equal(0o600);
    expect(fs.statSync(path.dirname(keyFile)).mode & 0o777).to.equal(0o700);
    const before = fs.readFileSync(keyFile, "utf8");
    const b = await TokenAuthority.load({ stateDir: dir });
    expect(fs.readFileSync(keyFile, "utf8")).to.equal(before);
    expect(b.keyId).to.equal(a.keyId);

    const token = await a.create({ trustDomain: TD, namespace: "shop", serviceAccount: "cart", ttlMs: 3600_000 });
    const claims = await b.verify(token, TD);
    expect(claims).to.include({ spiffeId: `spiffe://${TD}/ns/shop/sa/cart`, namespace: "shop", serviceAccount: "cart" });
    expect(claims.expiresAt.getTime() - claims.issuedAt.getTime()).to.equal(3600_000);

    const header = jose.decodeProtectedHeader(token);
    expect(header).to.include({ alg: "ES256", typ: "JWT", kid: a.keyId });
    const payload = jose.decodeJwt(token);
    expect(payload).to.include({ iss: "vmpilot", aud: "vmpilot-ca", sub: `spiffe://${TD}/ns/shop/sa/cart`, ns: "shop", sa: "cart" });
    expect(payload.jti).to.be.a("string");
  });

  it("refuses a group-readable signing key", async () => {
    const dir = newDir();
    await TokenAuthority.load({ stateDir: dir });
    fs.chmodSync(path.join(dir, "tokens", "signing-key.pem"), 0o644);
    const err = await rejection(TokenAuthority.load({ stateDir: dir }));
    expect(err.message).to.match(/signing-key\.pem has mode 0644: a private key must not be accessible to group or others/);
  });

  describe("verification names what is wrong", () => {
    let tokens: TokenAuthority;
    let stateDir: string;
    before(async () => {
      stateDir = newDir();
      tokens = await TokenAuthority.load({ stateDir, clockToleranceS: 0 });
    });
    const mint = (ttlMs = 3600_000) => tokens.create({ trustDomain: TD, namespace: "shop", serviceAccount: "cart", ttlMs });

    it("expired", async () => {
      const token = await mint(1000);
      expect((await tokens.verify(token, TD)).namespace).to.equal("shop");
      const rejected = () => tokens.verify(token, TD).then(() => false, () => true);
      await until("the token to expire", rejected, 10_000);
      const err = await rejection(tokens.verify(token, TD));
      expect(err).to.be.instanceOf(TokenError);
      expect(err.message).to.match(/^token expired at \d{4}-\d\d-\d\dT/);
    });

    it("tampered: a flipped signature byte or an edited payload", async () => {
      const token = await mint();
      const [h, p, s] = token.split(".") as [string, string, string];
      const sig = Buffer.from(s, "base64url");
      sig[10] = sig[10]! ^ 0x01;
      let err = await rejection(tokens.verify(`${h}.${p}.${sig.toString("base64url")}`, TD));
      expect(err.message).to.equal("token signature does not verify (tampered or forged token)");

      const payload = JSON.parse(Buffer.from(p, "base64url").toString()) as Record<string, unknown>;
      payload.sa = "admin";
      payload.sub = `spiffe://${TD}/ns/shop/sa/admin`;
      err = await rejection(tokens.verify(`${h}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.${s}`, TD));
      expect(err.message).to.equal("token signature does not verify (tampered or forged token)");
    });

    it("signed by another key", async () => {
      const other = await TokenAuthority.load({ stateDir: newDir() });
      const token = await other.create({ trustDomain: TD, namespace: "shop", serviceAccount: "cart" });
      const err = await rejection(tokens.verify(token, TD));
      expect(err.message).to.equal(
        `token signature does not verify: signed by another key (kid ${other.keyId}, this control plane's key is ${tokens.keyId})`,
      );
    });

    it("alg none, a wrong audience, another trust domain, garbage", async () => {
      const unsigned = new jose.UnsecuredJWT({ ns: "shop", sa: "cart" })
        .setIssuer("vmpilot")
        .setAudience("vmpilot-ca")
        .setSubject(`spiffe://${TD}/ns/shop/sa/cart`)
        .setIssuedAt()
        .setExpirationTime("1h")
        .setJti("x")
        .encode();
      expect((await rejection(tokens.verify(unsigned, TD))).message).to.equal("token algorithm not allowed (only ES256)");

      // Signed with the right key but minted for another audience (say, a token meant for another service).
      const key = await jose.importPKCS8(fs.readFileSync(path.join(stateDir, "tokens", "signing-key.pem"), "utf8"), "ES256");
      const otherAudience = await new jose.SignJWT({ ns: "shop", sa: "cart" })
        .setProtectedHeader({ alg: "ES256" })
        .setIssuer("vmpilot")
        .setAudience("some-other-service")
        .setSubject(`spiffe://${TD}/ns/shop/sa/cart`)
        .setIssuedAt()
        .setExpirationTime("1h")
        .setJti("y")
        .sign(key);
      expect((await rejection(tokens.verify(otherAudience, TD))).message).to.equal(
        'token claim "aud" invalid: unexpected "aud" claim value',
      );

      expect((await rejection(tokens.verify(await mint(), "other.domain"))).message).to.equal(
        "token is for trust domain cluster.local, this CA serves other.domain",
      );
      expect((await rejection(tokens.verify("not-a-token", TD))).message).to.equal("token is not a JWT");
    });
  });

  it("`vmpilot token create` prints a token the CA accepts for exactly that identity", async function () {
    this.timeout(60_000);
    const stateDir = newDir();
    const { logger } = captureLogger();
    const port = await startSecurePort({ stateDir, logger });
    try {
      const out = await runCli(["token", "create", "--namespace", "shop", "--service-account", "cart", "--ttl", "30m", "--state-dir", stateDir]);
      expect(out.code, out.stderr).to.equal(0);
      const token = out.stdout.trim();
      expect(token.split(".")).to.have.length(3);
      const payload = jose.decodeJwt(token);
      expect(payload.exp! - payload.iat!).to.equal(1800);

      const id = `spiffe://${TD}/ns/shop/sa/cart`;
      const { csrPem } = await generateKeyAndCsr(id);
      const chain = await requestCertificate({
        address: port.address,
        token,
        csrPem,
        rootCaPem: port.ca.authority.rootCertPem,
        expectedServerSan: controlPlaneSpiffeId(TD),
      });
      expect(uriSans(chain[0]!).uris).to.deep.equal([id]);
    } finally {
      await port.close();
    }
  });

  it("`vmpilot token create --config FILE` uses the server's stateDir and trust domain", async function () {
    this.timeout(60_000);
    const base = newDir();
    fs.mkdirSync(path.join(base, "conf.d"));
    const configFile = path.join(base, "vmpilot.yaml");
    fs.writeFileSync(configFile, "configDirs: [conf.d]\nstateDir: state\nmesh:\n  trustDomain: corp.example\n");
    const out = await runCli(["token", "create", "-c", configFile, "-n", "shop", "-s", "cart"]);
    expect(out.code, out.stderr).to.equal(0);
    const tokens = await TokenAuthority.load({ stateDir: path.join(base, "state") });
    const claims = await tokens.verify(out.stdout.trim(), "corp.example");
    expect(claims.spiffeId).to.equal("spiffe://corp.example/ns/shop/sa/cart");
    expect(claims.expiresAt.getTime() - claims.issuedAt.getTime()).to.equal(24 * 3600_000);
  });

  it("`vmpilot token create` rejects a bad --ttl and a bad identity with a message and exit code 1", async function () {
    this.timeout(60_000);
    const stateDir = newDir();
    const [badTtl, badId, noState] = await Promise.all([
      runCli(["token", "create", "-n", "shop", "-s", "cart", "--ttl", "soon", "--state-dir", stateDir]),
      runCli(["token", "create", "-n", "shop/evil", "-s", "cart", "--state-dir", stateDir]),
      runCli(["token", "create", "-n", "shop", "-s", "cart"], { VMPILOT_STATE_DIR: "" }),
    ]);
    expect(noState.code).to.equal(1);
    expect(noState.stderr).to.equal(
      "vmpilot token create: no state dir: pass --state-dir DIR or --config FILE (with stateDir), or set VMPILOT_STATE_DIR\n",
    );
    expect(badTtl.code).to.equal(1);
    expect(badTtl.stderr).to.include(`"soon" is not a duration of at least 1s`);
    expect(badTtl.stdout).to.equal("");
    expect(badId.code).to.equal(1);
    expect(badId.stderr).to.include(`"spiffe://cluster.local/ns/shop/evil/sa/cart" is not a valid identity`);
    expect(badId.stdout).to.equal("");
  });
});
