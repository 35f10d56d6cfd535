import http from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import type { ProbeConfig } from "../src/config.js";
import { probeOnce, Prober, type ProbeResult } from "../src/probes.js";
import { until } from "./helpers.js";

const timing = { initialDelayMs: 0, periodMs: 20, timeoutMs: 1000, successThreshold: 1, failureThreshold: 3 };

describe("probes", () => {
  let server: http.Server;
  let port: number;
  let status = 200;
  const seen: http.IncomingHttpHeaders[] = [];
  before(async () => {
    server = http.createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(req.url === "/ready" ? status : 404).end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  it("httpGet: 2xx/3xx pass, others fail, configured headers are sent", async () => {
    const p: ProbeConfig = { ...timing, httpGet: { path: "/ready", port, host: "127.0.0.1", scheme: "HTTP", httpHeaders: [{ name: "x-probe", value: "vmpilot" }] } };
    status = 204;
    expect(await probeOnce(p)).to.deep.equal({ ok: true, detail: "HTTP 204" });
    expect(seen.at(-1)!["x-probe"]).to.equal("vmpilot");
    status = 302;
    expect((await probeOnce(p)).ok).to.equal(true);
    status = 500;
    expect(await probeOnce(p)).to.deep.equal({ ok: false, detail: "HTTP 500" });
  });

  it("tcpSocket: a refused connection fails with its reason", async () => {
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const freePort = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    expect(await probeOnce({ ...timing, tcpSocket: { port: freePort, host: "127.0.0.1" } })).to.deep.equal({ ok: false, detail: "connect ECONNREFUSED" });
    expect((await probeOnce({ ...timing, tcpSocket: { port, host: "127.0.0.1" } })).ok).to.equal(true);
  });

  it("exec: exit 0 passes, exit status and timeouts fail", async () => {
    const node = process.execPath;
    expect(await probeOnce({ ...timing, exec: { command: [node, "-e", "process.exit(0)"] } })).to.deep.equal({ ok: true, detail: "exit 0" });
    expect(await probeOnce({ ...timing, exec: { command: [node, "-e", "process.exit(3)"] } })).to.deep.equal({ ok: false, detail: "exit 3" });
    const slow = await probeOnce({ ...timing, timeoutMs: 200, exec: { command: [node, "-e", "setTimeout(() => {}, 10000)"] } });
    expect(slow).to.deep.equal({ ok: false, detail: "timed out after 200 ms" });
  });

  it("applies success and failure thresholds like a readiness probe", () => {
    const prober = new Prober({ ...timing, successThreshold: 2, failureThreshold: 2 });
    const changes: boolean[] = [];
    prober.on("change", (r: boolean) => changes.push(r));
    const ok: ProbeResult = { ok: true, detail: "ok" };
    const bad: ProbeResult = { ok: false, detail: "bad" };
    prober.record(ok);
    expect(prober.status().ready).to.equal(false);
    prober.record(ok);
    expect(prober.status().ready).to.equal(true);
    prober.record(bad);
    prober.record(ok);
    prober.record(bad);
    expect(prober.status().ready).to.equal(true);
    prober.record(bad);
    expect(prober.status().ready).to.equal(false);
    expect(changes).to.deep.equal([true, false]);
  });

  it("probes periodically once started and stops cleanly", async () => {
    status = 200;
    const prober = new Prober({ ...timing, httpGet: { path: "/ready", port, host: "127.0.0.1", scheme: "HTTP", httpHeaders: [] } });
    prober.start();
    await until("ready", () => prober.status().ready);
    status = 503;
    await until("not ready after three failures", () => !prober.status().ready);
    prober.stop();
    expect(prober.status().last!.detail).to.equal("HTTP 503");
  });
});
