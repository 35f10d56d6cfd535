// Randomised robustness: mutate valid config text in hostile ways and check the parser's two promises:
// it never throws, and it never returns an object from a document that produced an error.
import { expect } from "chai";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseDocuments, type ParseResult } from "@vmpilot/registry";
import { seededRandom } from "../../../test/helpers/random.js";

function corpus(): string[] {
  const root = new URL("../../../config/examples/", import.meta.url).pathname;
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.ya?ml$/.test(e)) out.push(readFileSync(p, "utf8"));
    }
  };
  walk(root);
  out.push(
    JSON.stringify([{ apiVersion: "networking.istio.io/v1", kind: "ServiceEntry", metadata: { name: "j" }, spec: { hosts: ["j.example.com"], ports: [{ number: 80, name: "http", protocol: "HTTP" }], resolution: "DNS" } }], null, 2),
  );
  return out;
}

const SCALARS = ["null", "~", "true", "0", "-1", "1e308", "99999999999999999999999", ".nan", "-.inf", "0x1F", '""', "[]", "{}", "[a, b]", "{a: 1}", "*undefined", "!!binary aGVsbG8=", "2001-12-14", "'quoted'", "|\n  block"];

type Mutator = (text: string, rnd: () => number) => string;

const pick = <T>(xs: readonly T[], rnd: () => number): T => xs[Math.floor(rnd() * xs.length)]!;

const MUTATORS: Record<string, Mutator> = {
  truncate: (t, r) => t.slice(0, Math.floor(r() * t.length)),
  swapScalar: (t, r) => {
    const lines = t.split("\n");
    const i = Math.floor(r() * lines.length);
    lines[i] = lines[i]!.replace(/:( *)(\S.*)?$/, `:$1${pick(SCALARS, r)}`);
    return lines.join("\n");
  },
  hugeNumber: (t, r) => t.replace(/\b\d+\b/, () => pick(["1e400", "123456789012345678901234567890", "-0", "4294967296", "65536", "0.1"], r)),
  deepNesting: (t, r) => {
    const depth = pick([10, 63, 65, 500, 20000], r);
    const lines = t.split("\n");
    const i = Math.floor(r() * lines.length);
    lines[i] = lines[i]!.replace(/:( *)(\S.*)?$/, `: ${"[".repeat(depth)}x${"]".repeat(depth)}`);
    return lines.join("\n");
  },
  deepBlock: (t) => `${t}\n---\n${Array.from({ length: 200 }, (_, i) => `${" ".repeat(i)}k${i}:`).join("\n")} v\n`,
  deepDashes: (t) => `${t}\n---\nspec: ${"- ".repeat(50000)}x\n`,
  binary: (t, r) => {
    const at = Math.floor(r() * t.length);
    const junk = Array.from({ length: 1 + Math.floor(r() * 16) }, () => String.fromCharCode(Math.floor(r() * 0xffff))).join("");
    return t.slice(0, at) + junk + t.slice(at);
  },
  nul: (t, r) => {
    const at = Math.floor(r() * t.length);
    return `${t.slice(0, at)}\u0000${t.slice(at)}`;
  },
  duplicateLine: (t, r) => {
    const lines = t.split("\n");
    const i = Math.floor(r() * lines.length);
    lines.splice(i, 0, lines[i]!);
    return lines.join("\n");
  },
  deleteLine: (t, r) => {
    const lines = t.split("\n");
    lines.splice(Math.floor(r() * lines.length), 1);
    return lines.join("\n");
  },
  reindent: (t, r) => {
    const lines = t.split("\n");
    const i = Math.floor(r() * lines.length);
    lines[i] = (r() < 0.5 ? " " : "") + lines[i]!.replace(/^ /, r() < 0.5 ? "" : "\t");
    return lines.join("\n");
  },
  aliasBomb: (t) =>
    `${t}\n---\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n`,
  aliasInFields: (t, r) => {
    const n = pick([2, 50, 120], r);
    return `${t}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: bomb\n  labels: &l {a: b}\nspec:\n  hosts: &h [a.example.com]\n  ports:\n${Array.from({ length: n }, (_, i) => `  - {number: ${(i % 65535) + 1}, name: p${i}, protocol: HTTP}\n`).join("")}  subjectAltNames: [${Array.from({ length: n }, () => "*h").join(", ")}]\n  resolution: DNS\n`;
  },
  anchorCycle: (t) => `${t}\n---\n&x [*x]\n`,
  mergeKey: (t) => `${t}\n---\nbase: &base {apiVersion: networking.istio.io/v1}\nsvc:\n  <<: *base\n  kind: ServiceEntry\n`,
  mergeCycle: (t) => `${t}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: m\n  labels: &x\n    a: b\n    <<: *x\nspec:\n  address: 192.0.2.1\n`,
  repeatDocs: (t, r) => Array.from({ length: 1 + Math.floor(r() * 3) }, () => t).join("\n---\n"),
  crlf: (t) => t.replace(/\n/g, "\r\n"),
  bom: (t) => `\ufeff${t}`,
};

/**
 * Each document's line range. A `---` or `...` marker at the start of a line always ends a YAML document (even
 * inside an unterminated flow collection or block scalar), so splitting on them is exact without a parser.
 */
function documentLines(text: string): [number, number][] {
  const lines = text.split("\n"); // as yaml's LineCounter counts lines
  const out: [number, number][] = [];
  let start = 1;
  lines.forEach((l, i) => {
    if (/^(---|\.\.\.)(\s|$)/.test(l)) {
      out.push([start, i + 1]);
      start = i + 1;
    }
  });
  out.push([start, lines.length]);
  return out;
}

function checkInvariants(text: string, r: ParseResult, label: string): void {
  const lineCount = text.split(/\r?\n|\r/).length + 1;
  for (const p of r.problems) {
    expect(p.line, label).to.be.a("number").within(1, lineCount);
    expect(p.column, label).to.be.a("number").at.least(1);
    expect(p.message, label).to.be.a("string").and.not.equal("");
    expect(p.message, label).to.not.match(/internal error/);
  }
  const errors = r.problems.filter((p) => p.severity === "error");
  if (r.objects.length === 0 || errors.length === 0) return;
  if (errors.some((e) => e.line === 1 && e.column === 1 && /larger than|nesting/.test(e.message))) {
    expect(r.objects, `${label}: file-level error but objects returned`).to.deep.equal([]);
  }
  const ranges = documentLines(text.replace(/^\ufeff/, ""));
  for (const o of r.objects) {
    if (o.origin.type !== "file") continue;
    const line = o.origin.line;
    const range = ranges.find(([a, b]) => line >= a && line <= b);
    if (!range) continue;
    const inDoc = errors.filter((e) => e.line >= range[0] && e.line <= range[1]);
    expect(inDoc, `${label}: object ${o.kind}/${o.metadata.name} returned from a document with errors`).to.deep.equal([]);
  }
}

describe("parseDocuments under hostile input (seeded fuzz)", function () {
  this.timeout(60_000);
  const SEED = 20261122;
  const CASES = 2000;

  it(`never throws and never returns objects from a failing document (${CASES} cases, seed ${SEED})`, () => {
    const rnd = seededRandom(SEED);
    const texts = corpus();
    const names = Object.keys(MUTATORS);
    let withErrors = 0;
    let withObjects = 0;
    for (let i = 0; i < CASES; i++) {
      let text = pick(texts, rnd);
      const applied: string[] = [];
      const rounds = 1 + Math.floor(rnd() * 3);
      for (let k = 0; k < rounds; k++) {
        const name = pick(names, rnd);
        applied.push(name);
        text = MUTATORS[name]!(text, rnd);
      }
      const label = `case ${i} (${applied.join("+")})`;
      let r: ParseResult;
      try {
        r = parseDocuments("fuzz.yaml", text);
      } catch (e) {
        throw new Error(`${label} threw: ${(e as Error).stack}`);
      }
      checkInvariants(text, r, label);
      if (r.problems.some((p) => p.severity === "error")) withErrors++;
      if (r.objects.length > 0) withObjects++;
    }
    // The mutations must actually exercise both paths, or this test proves nothing.
    expect(withErrors).to.be.greaterThan(CASES / 4);
    expect(withObjects).to.be.greaterThan(CASES / 10);
  });

  it("stops an alias bomb in a known field with an error instead of expanding it", () => {
    const levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 8; i++) levels.push(`    - &l${i} [${Array.from({ length: 10 }, () => (i === 1 ? "*a" : `*l${i - 1}`)).join(", ")}]`);
    const text = `apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: bomb\n  annotations:\n    ${levels[0]}\nspec:\n  egress:\n  - hosts: ["./*"]\n  ingress:\n${levels.slice(1).join("\n")}\n`;
    const started = process.hrtime.bigint();
    const r = parseDocuments("bomb.yaml", text);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    expect(r.objects).to.deep.equal([]);
    expect(r.problems.some((p) => p.severity === "error")).to.equal(true);
    // Not a speed assertion: 10^8 expanded nodes would take minutes and gigabytes, any bounded walk is far below.
    expect(ms).to.be.lessThan(20_000);
  });

  it("reports too many aliases in one document", () => {
    const text = `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: many\nspec:\n  hosts: &h [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  subjectAltNames: [${Array.from({ length: 150 }, () => "*h").join(", ")}]\n`;
    const r = parseDocuments("many.yaml", text);
    expect(r.objects).to.deep.equal([]);
    expect(r.problems.map((p) => p.message).join("\n")).to.match(/too many aliases/);
  });

  it("reports flow nesting deeper than the limit at the bracket that exceeds it", () => {
    const text = `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: deep\nspec:\n  hosts: ${"[".repeat(100)}${"]".repeat(100)}\n`;
    const r = parseDocuments("deep.yaml", text);
    expect(r.objects).to.deep.equal([]);
    expect(r.problems).to.have.length(1);
    expect(r.problems[0]).to.include({ severity: "error", line: 6, column: 10 + 64 });
    expect(r.problems[0]!.message).to.match(/nesting deeper than 64/);
  });
});
