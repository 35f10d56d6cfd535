// `vmpilot validate` as operators and CI run it: a real child process from the TypeScript sources, checked by
// exit code and output lines.
import { expect } from "chai";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(ROOT, "packages/xds/src/cli.ts");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function vmpilot(args: string[], cwd = ROOT): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--conditions=vmpilot-source", "--import", "tsx", CLI, ...args], { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const LINE = /^(.+):(\d+):(\d+): (error|warning): (.+)$/;

const SE = (name: string, host: string, extra = "") => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ${name}
  namespace: shop
spec:
  hosts:
  - ${host}
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
${extra}`;

describe("vmpilot validate (CLI)", function () {
  this.timeout(60_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "vmpilot-cli-validate-"));
    await mkdir(join(dir, "good"));
    await mkdir(join(dir, "bad", "nested"), { recursive: true });
    await writeFile(join(dir, "good", "a.yaml"), SE("a", "a.example.com"));
    await writeFile(join(dir, "bad", "z.yaml"), SE("z", "z.example.com", "  subjectAltName: [x]\n"));
    await writeFile(join(dir, "bad", "nested", "b.yaml"), `${SE("b1", "dup.example.com")}---\n${SE("b2", "dup.example.com").replace("resolution: DNS", "resolution: DSN")}---\n${SE("b3", "dup.example.com")}`);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("exits 0 on the example GitOps directory with a summary and no problems", async () => {
    const r = await vmpilot(["validate", "config/examples"]);
    expect(r.stderr).to.equal("");
    expect(r.code).to.equal(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).to.have.length(1);
    expect(lines[0]).to.match(/^\d+ files, \d+ objects: 0 errors, 0 warnings$/);
    const [, files, objects] = /^(\d+) files, (\d+) objects/.exec(lines[0]!)!;
    expect(Number(files)).to.be.at.least(5);
    expect(Number(objects)).to.be.at.least(10);
  });

  it("prints FILE:LINE:COL: severity: MESSAGE per problem, sorted by file then line, paths relative as given, and exits 1", async () => {
    const rel = relative(ROOT, join(dir, "bad"));
    const r = await vmpilot(["validate", rel]);
    expect(r.code).to.equal(1);
    const lines = r.stdout.trimEnd().split("\n");
    const summary = lines.pop()!;
    expect(summary).to.match(/^2 files, 2 objects: 2 errors, 1 warning$/);
    const parsed = lines.map((l) => {
      const m = LINE.exec(l);
      expect(m, l).to.not.equal(null);
      return { file: m![1]!, line: Number(m![2]), column: Number(m![3]), severity: m![4]!, message: m![5]! };
    });
    const nested = join(rel, "nested", "b.yaml");
    const z = join(rel, "z.yaml");
    expect(parsed.map((p) => [p.file, p.line, p.column, p.severity])).to.deep.equal([
      [nested, 27, 15, "error"], // resolution: DSN in the second document
      [nested, 36, 5, "warning"], // b3 loses dup.example.com:80 to b1
      [z, 14, 3, "error"], // subjectAltName typo
    ]);
    expect(parsed[0]!.message).to.match(/invalid value 'DSN'/);
    expect(parsed[1]!.message).to.match(/ServiceEntry shop\/b3 .* and ServiceEntry shop\/b1 .* both claim host 'dup.example.com' on port 80/);
    expect(parsed[2]!.message).to.equal("unknown field 'subjectAltName' in spec; did you mean 'subjectAltNames'?");
  });

  it("reports a nonexistent path as an error line and exits 1, still checking the other paths", async () => {
    const good = relative(ROOT, join(dir, "good"));
    const r = await vmpilot(["validate", good, "no/such/dir"]);
    expect(r.code).to.equal(1);
    expect(r.stdout.trimEnd().split("\n")).to.deep.equal(["no/such/dir:1:1: error: no such file or directory", "1 file, 1 object: 1 error, 0 warnings"]);
  });

  it("--output json gives a machine-readable report with the same verdict", async () => {
    const r = await vmpilot(["validate", "--output", "json", join(dir, "bad"), join(dir, "good")]);
    expect(r.code).to.equal(1);
    const report = JSON.parse(r.stdout);
    expect(report).to.include({ valid: false, files: 3, errors: 2, warnings: 1 });
    expect(report.objects.map((o: { name: string }) => o.name).sort()).to.deep.equal(["a", "b1", "b3"]);
    expect(report.problems[0]).to.include({ file: join(dir, "bad", "nested", "b.yaml"), line: 27, column: 15, severity: "error", kind: "ServiceEntry", name: "b2" });
    const ok = await vmpilot(["validate", "-o", "json", join(dir, "good")]);
    expect(ok.code).to.equal(0);
    expect(JSON.parse(ok.stdout)).to.include({ valid: true, files: 1, errors: 0, warnings: 0 });
  });

  it("rejects an unknown output format and a missing path argument", async () => {
    const bad = await vmpilot(["validate", "-o", "xml", "config/examples"]);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/xml/);
    const none = await vmpilot(["validate"]);
    expect(none.code).to.not.equal(0);
    expect(none.stderr).to.match(/missing required argument/);
  });
});
