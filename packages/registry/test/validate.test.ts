// Cross-object validation and the file walk behind `vmpilot validate`, on real temp directories.
import { expect } from "chai";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compareServiceEntryPrecedence, crossValidate, parseDocuments, validatePaths, type AnyConfig, type ConfigObject } from "@vmpilot/registry";
import { head, loc } from "./fixtures/parse-helpers.js";

const se = (name: string, host: string, ports: number[], ns = "shop") =>
  `${head("ServiceEntry", name, `  namespace: ${ns}\n`)}  hosts:\n  - ${host}\n  ports:\n${ports.map((p) => `  - {number: ${p}, name: p${p}, protocol: HTTP}\n`).join("")}  resolution: DNS\n`;

function objects(file: string, text: string): AnyConfig[] {
  const r = parseDocuments(file, text);
  expect(r.problems, JSON.stringify(r.problems)).to.deep.equal([]);
  return r.objects;
}

describe("crossValidate", () => {
  it("warns on the losing ServiceEntry of a host+port conflict, naming both files:lines, whatever the load order", () => {
    const aText = `# catalog\n${se("catalog-b", "catalog.shop.internal", [80, 8080])}`;
    const bText = se("catalog-a", "catalog.shop.internal", [80]);
    const a = objects("team-b/catalog.yaml", aText);
    const b = objects("team-a/catalog.yaml", bText);
    for (const order of [[...a, ...b], [...b, ...a]]) {
      const problems = crossValidate(order);
      expect(problems).to.have.length(1);
      const p = problems[0]!;
      expect(p.severity).to.equal("warning");
      expect(p.file).to.equal("team-b/catalog.yaml");
      expect({ line: p.line, column: p.column }).to.deep.equal(loc(aText, "catalog.shop.internal"));
      expect(p.message).to.contain("team-b/catalog.yaml:2:1").and.contain("team-a/catalog.yaml:1:1");
      expect(p.message).to.match(/both claim host 'catalog.shop.internal' on port 80; 'catalog-a' wins/);
      expect(p.name).to.equal("catalog-b");
    }
  });

  it("names every shared port in one warning per host", () => {
    const objs = [...objects("a.yaml", se("one", "api.example.com", [80, 443, 8080])), ...objects("b.yaml", se("two", "api.example.com", [443, 80]))];
    const problems = crossValidate(objs);
    expect(problems).to.have.length(1);
    expect(problems[0]!.message).to.match(/on ports 80, 443; 'one' wins/);
    expect(problems[0]!.file).to.equal("b.yaml");
  });

  it("does not report the same host on different ports, or in different namespaces", () => {
    const objs = [
      ...objects("a.yaml", se("one", "api.example.com", [80])),
      ...objects("b.yaml", se("two", "api.example.com", [443])),
      ...objects("c.yaml", se("three", "api.example.com", [80], "other")),
    ];
    expect(crossValidate(objs)).to.deep.equal([]);
  });

  it("orders ServiceEntry precedence by namespace, name, then file and line", () => {
    const [x] = objects("z.yaml", se("alpha", "h.example.com", [80])) as ConfigObject<"ServiceEntry">[];
    const [y] = objects("a.yaml", se("beta", "h.example.com", [80])) as ConfigObject<"ServiceEntry">[];
    const [z] = objects("b.yaml", se("alpha", "h.example.com", [80])) as ConfigObject<"ServiceEntry">[];
    expect(compareServiceEntryPrecedence(x!, y!)).to.be.lessThan(0);
    expect(compareServiceEntryPrecedence(y!, x!)).to.be.greaterThan(0);
    expect(compareServiceEntryPrecedence(z!, x!)).to.be.lessThan(0); // same name: b.yaml before z.yaml
    expect(compareServiceEntryPrecedence(x!, x!)).to.equal(0);
  });

  it("reports a Kind/namespace/name defined twice as an error on the later definition", () => {
    const objs = [...objects("b.yaml", se("dup", "a.example.com", [80])), ...objects("a.yaml", se("dup", "b.example.com", [81]))];
    const problems = crossValidate(objs);
    expect(problems).to.have.length(1);
    expect(problems[0]).to.include({ severity: "error", file: "b.yaml", line: 1, column: 1 });
    expect(problems[0]!.message).to.match(/ServiceEntry\/shop\/dup is already defined at a\.yaml:1:1/);
  });

  it("warns at a VirtualService subset that no visible DestinationRule defines", () => {
    const drText = `${head("DestinationRule", "reviews", "  namespace: shop\n")}  host: reviews.shop.internal\n  subsets:\n  - name: v1\n    labels: {version: v1}\n`;
    const privateDr = `${head("DestinationRule", "reviews-private", "  namespace: other\n")}  host: reviews.shop.internal\n  exportTo: ["."]\n  subsets:\n  - name: v3\n`;
    const vsText = `${head("VirtualService", "reviews", "  namespace: shop\n")}  hosts: [reviews.shop.internal]\n  http:\n  - route:\n    - destination:\n        host: reviews.shop.internal\n        subset: v1\n      weight: 50\n    - destination:\n        host: reviews.shop.internal\n        subset: v3\n      weight: 50\n    mirror:\n      host: unknown.consul.internal\n`;
    const problems = crossValidate([...objects("dr.yaml", drText), ...objects("dr2.yaml", privateDr), ...objects("vs.yaml", vsText)]);
    expect(problems).to.have.length(1);
    const p = problems[0]!;
    expect(p).to.include({ severity: "warning", file: "vs.yaml", kind: "VirtualService", field: "spec.http[0].route[1].destination.subset" });
    expect({ line: p.line, column: p.column }).to.deep.equal(loc(vsText, "v3"));
    expect(p.message).to.match(/subset 'v3' of host 'reviews.shop.internal' is not defined by any DestinationRule visible from namespace 'shop' \(shop\/reviews defines v1\)/);
  });

  it("matches subsets through wildcard DestinationRule hosts, and says nothing about hosts without a ServiceEntry", () => {
    const dr = `${head("DestinationRule", "all-internal")}  host: "*.shop.internal"\n  subsets:\n  - name: v2\n`;
    const vs = `${head("VirtualService", "r")}  hosts: [payments.shop.internal]\n  http:\n  - route:\n    - destination:\n        host: payments.shop.internal\n        subset: v2\n`;
    expect(crossValidate([...objects("dr.yaml", dr), ...objects("vs.yaml", vs)])).to.deep.equal([]);
  });
});

describe("validatePaths", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "vmpilot-validate-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("walks directories recursively, reads .yaml/.yml/.json, skips hidden entries and other files", async () => {
    const root = join(dir, "walk");
    await mkdir(join(root, "team-a", "nested"), { recursive: true });
    await mkdir(join(root, ".git"), { recursive: true });
    await writeFile(join(root, "team-a", "a.yaml"), se("a", "a.example.com", [80]));
    await writeFile(join(root, "team-a", "nested", "b.yml"), se("b", "b.example.com", [80]));
    await writeFile(join(root, "c.json"), JSON.stringify({ apiVersion: "networking.istio.io/v1", kind: "WorkloadEntry", metadata: { name: "c" }, spec: { address: "192.0.2.1" } }));
    await writeFile(join(root, "README.md"), "# not config: [unbalanced\n");
    await writeFile(join(root, ".git", "x.yaml"), "broken: [\n");
    await writeFile(join(root, ".hidden.yaml"), "broken: [\n");
    const r = await validatePaths([root]);
    expect(r.problems).to.deep.equal([]);
    expect(r.files).to.equal(3);
    expect(r.objects.map((o) => o.metadata.name).sort()).to.deep.equal(["a", "b", "c"]);
    expect(r.objects.find((o) => o.metadata.name === "b")!.origin).to.deep.include({ file: join(root, "team-a", "nested", "b.yml") });
  });

  it("warns about a directory without config files (a mistyped path should not pass silently)", async () => {
    const empty = join(dir, "empty");
    await mkdir(join(empty, "sub"), { recursive: true });
    await writeFile(join(empty, "notes.txt"), "hello\n");
    const r = await validatePaths([empty]);
    expect(r.files).to.equal(0);
    expect(r.problems).to.deep.equal([{ severity: "warning", file: empty, line: 1, column: 1, message: "no .yaml, .yml or .json files found in this directory" }]);
  });

  it("reads a ConfigMap-style mount (..data symlink swap) once", async () => {
    const root = join(dir, "configmap");
    await mkdir(join(root, "..2026_01_01_00_00_00.1"), { recursive: true });
    await writeFile(join(root, "..2026_01_01_00_00_00.1", "svc.yaml"), se("svc", "svc.example.com", [80]));
    await symlink("..2026_01_01_00_00_00.1", join(root, "..data"));
    await symlink(join("..data", "svc.yaml"), join(root, "svc.yaml"));
    const r = await validatePaths([root]);
    expect(r.problems).to.deep.equal([]);
    expect(r.files).to.equal(1);
    expect(r.objects).to.have.length(1);
  });

  it("survives symlink loops and reports missing paths and oversized files", async () => {
    const root = join(dir, "loop");
    await mkdir(root, { recursive: true });
    await symlink(".", join(root, "again"));
    await writeFile(join(root, "x.yaml"), se("x", "x.example.com", [80]));
    await writeFile(join(root, "huge.yaml"), `# ${"x".repeat(4 * 1024 * 1024 + 10)}\n`);
    const missing = join(dir, "does-not-exist");
    const r = await validatePaths([root, missing]);
    expect(r.objects.map((o) => o.metadata.name)).to.deep.equal(["x"]);
    expect(r.problems.map((p) => [p.file, p.severity, p.message])).to.deep.equal([
      [missing, "error", "no such file or directory"],
      [join(root, "huge.yaml"), "error", "file is larger than 4 MiB; split it up"],
    ]);
  });

  it("reads a file named explicitly whatever its extension, and sorts problems by file and line", async () => {
    const f = join(dir, "explicit.conf");
    const g = join(dir, "explicit.yaml");
    const fText = se("bad", "bad.example.com", [80]).replace("resolution: DNS", "resolution: DSN");
    const gText = `${se("x1", "dup.example.com", [80])}---\n${se("x2", "dup.example.com", [80])}`;
    await writeFile(f, fText);
    await writeFile(g, gText);
    const r = await validatePaths([g, f]);
    expect(r.problems.map((p) => `${p.file}:${p.line}`)).to.deep.equal([`${f}:${loc(fText, "DSN").line}`, `${g}:${loc(gText, "dup.example.com", 1).line}`]);
    expect(r.problems[1]!.severity).to.equal("warning");
  });
});
