// The shared logger, observed from outside as an operator sees it: a child process whose stderr is a pipe.
import { expect } from "chai";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const loggerModule = path.join(repoRoot, "packages/registry/src/logger.ts");

function run(script: string, env: Record<string, string>): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ["--import", "tsx", script],
      { cwd: repoRoot, env: { ...process.env, VMPILOT_LOG_LEVEL: "", VMPILOT_LOG_FORMAT: "", ...env }, timeout: 60_000 },
      (err, stdout, stderr) => (err ? reject(err) : resolve({ stdout, stderr })),
    );
  });
}

describe("logger", function () {
  this.timeout(120_000);
  let dir: string;
  let script: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-logger-"));
    script = path.join(dir, "log.ts");
    await writeFile(
      script,
      `import { createLogger } from ${JSON.stringify(loggerModule)};
const log = createLogger("file-source");
log.debug("debug line");
log.info("info line", { files: 3 });
log.warn("conf/a.yaml:3:5: unknown field");
`,
    );
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("writes JSON lines to stderr when it is not a terminal, nothing to stdout, at level info by default", async () => {
    const { stdout, stderr } = await run(script, {});
    expect(stdout).to.equal("");
    const lines = stderr.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.level, l.message, l.component])).to.deep.equal([
      ["info", "info line", "file-source"],
      ["warn", "conf/a.yaml:3:5: unknown field", "file-source"],
    ]);
    expect(lines[0]).to.include({ files: 3 });
    expect(lines[0]!.timestamp).to.be.a("string");
  });

  it("takes its level from VMPILOT_LOG_LEVEL and a human format from VMPILOT_LOG_FORMAT=pretty", async () => {
    const quiet = await run(script, { VMPILOT_LOG_LEVEL: "warn" });
    expect(quiet.stderr.trim().split("\n")).to.have.length(1);
    expect(quiet.stderr).to.contain("unknown field");

    const pretty = await run(script, { VMPILOT_LOG_LEVEL: "debug", VMPILOT_LOG_FORMAT: "pretty" });
    const lines = pretty.stderr.trim().split("\n");
    expect(lines).to.have.length(3);
    expect(lines[2]).to.match(/\[file-source\] conf\/a\.yaml:3:5: unknown field$/);
    expect(() => JSON.parse(lines[0]!)).to.throw();
  });
});
