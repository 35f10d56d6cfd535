// `vmpilot server` and `vmpilot proxy-status` as operators run them: a child process, signals, exit codes.
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { collectJsonLines, eventually, serviceEntry } from "./helpers/e2e.js";
import { RawAdsClient, testNode } from "./helpers/raw-ads-client.js";
import { TypeUrl } from "@vmpilot/xds/protos";
import { decodeNameTable, NAME_TABLE_RESOURCE_NAME, NAME_TABLE_TYPE_URL } from "@vmpilot/xds/generators/nametable";

const ROOT = path.join(import.meta.dirname, "..");
const CLI = path.join(ROOT, "packages", "xds", "src", "cli.ts");

interface Running {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stdout: string[];
  exit: Promise<number | null>;
}

function run(args: string[]): Running {
  const child = spawn(process.execPath, ["--conditions=vmpilot-source", "--import", "tsx", CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, VMPILOT_LOG_FORMAT: "json", VMPILOT_LOG_LEVEL: "info", VMPILOT_STATE_DIR: "" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const r: Running = { child, lines: [], stdout: [], exit: new Promise((resolve) => child.on("close", (code) => resolve(code))) };
  collectJsonLines(child.stderr!, r.lines);
  child.stdout!.on("data", (d: Buffer) => r.stdout.push(d.toString()));
  return r;
}

async function logged(r: Running, message: RegExp, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  const { value } = await eventually(`log line ${message}`, timeoutMs, async () => r.lines.find((l) => message.test(String(l.message))), 50);
  return value;
}

describe("vmpilot server (child process)", function () {
  this.timeout(90_000);
  let dir: string;
  const running: Running[] = [];

  before(async function () {
    dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-cli-"));
    await writeFile(path.join(dir, "echo.yaml"), serviceEntry({ name: "echo", host: "echo.example.com", port: 7070, endpoints: [{ address: "10.1.0.1" }] }));
  });

  after(async function () {
    for (const r of running) if (r.child.exitCode === null) r.child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });

  it("serves, reloads on SIGHUP, reports proxies through proxy-status, and drains on SIGTERM with exit 0", async function () {
    const configFile = path.join(dir, "vmpilot.yaml");
    await writeFile(configFile, `configDirs: [.]\nxdsAddr: 127.0.0.1:0\nhttpAddr: 127.0.0.1:0\n`);
    const r = run(["server", "--config", configFile]);
    running.push(r);
    const started = await logged(r, /^vmpilot server running$/);
    const http = String(started.http);
    const xds = String(started.xds);
    expect((await fetch(`http://${http}/ready`)).status).to.equal(200);

    const c = new RawAdsClient(xds, "sotw");
    try {
      c.send({ node: testNode("grpc-cli-1"), type_url: TypeUrl.Listener, resource_names: ["echo.example.com:7070"] });
      const resp = await c.next(10_000);
      c.send({ type_url: TypeUrl.Listener, resource_names: ["echo.example.com:7070"], response_nonce: resp.nonce, version_info: resp.version_info });
      await eventually("ACK recorded", 10_000, async () => {
        const z = (await (await fetch(`http://${http}/debug/syncz`)).json()) as { types: Record<string, { acked?: unknown }> }[];
        return z[0]?.types.LDS?.acked ? true : undefined;
      });
      // The CLI's cache also serves the agent's DNS name table (its own xDS type) from the same stream.
      c.send({ type_url: NAME_TABLE_TYPE_URL, resource_names: [NAME_TABLE_RESOURCE_NAME] });
      const table = await c.next(10_000);
      expect(table.type_url).to.equal(NAME_TABLE_TYPE_URL);
      expect(decodeNameTable(table.resources[0]!.value).table).to.have.property("echo.example.com");
      c.send({ type_url: NAME_TABLE_TYPE_URL, resource_names: [NAME_TABLE_RESOURCE_NAME], response_nonce: table.nonce, version_info: table.version_info });
      const ps = run(["proxy-status", "--http-addr", http]);
      expect(await ps.exit).to.equal(0);
      expect(ps.stdout.join("")).to.match(/grpc-cli-1\s+grpc\s+default\s+sotw\s+-\s+SYNCED/);

      await writeFile(configFile, `configDirs: [.]\nxdsAddr: 127.0.0.1:0\nhttpAddr: 127.0.0.1:0\nmesh: {outboundTrafficPolicy: REGISTRY_ONLY}\n`);
      r.child.kill("SIGHUP");
      await logged(r, /^config reloaded: new mesh settings$/);

      r.child.kill("SIGTERM");
      expect(await r.exit).to.equal(0);
      expect((await c.ended(10_000)).code).to.equal(0);
    } finally {
      c.close();
    }
  });

  it("refuses plaintext xDS on a non-loopback address without --insecure (exit 1, says why)", async function () {
    const r = run(["server", "--config-dir", dir, "--xds-addr", "0.0.0.0:0", "--http-addr", "127.0.0.1:0"]);
    running.push(r);
    expect(await r.exit).to.equal(1);
    expect(r.lines.map((l) => String(l.message)).join("\n")).to.match(/xdsAddr 0\.0\.0\.0:0 is not a loopback address/);
  });
});
