// The load generator process: K simulated proxies (bench/ads-client.ts), driven by the runner over IPC.
// It runs in its own process so that its CPU never counts against the server's.
import { AdsClient, type Arrival, now, type ProxyStyle } from "./ads-client.js";

export type LoadgenCommand =
  | { cmd: "connect"; address: string; style: ProxyStyle; count: number; namespaces: number; targets: string[]; timeoutMs: number }
  /** Watch for pushes of `typeUrl`; the proxies subscribed to any of `names` are the ones that must get one. */
  | { cmd: "arm"; typeUrl: string; names: string[] }
  | { cmd: "collect"; t0: number; timeoutMs: number }
  | { cmd: "close" };

export type LoadgenEvent =
  | { event: "converged"; ms: number[]; unconverged: number; bytes: number }
  | { event: "armed" }
  | { event: "collected"; latencies: number[]; subscribed: number; missing: number; unaffectedPushed: number; bytes: number; responses: number }
  | { event: "closed" };

interface Proxy {
  client: AdsClient;
  armedType?: string;
  expected: boolean;
  firstAfterArm?: Arrival;
  armedBytes: number;
  armedResponses: number;
}

const proxies: Proxy[] = [];

function send(e: LoadgenEvent): void {
  process.send!(e);
}

async function until(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

async function connect(c: Extract<LoadgenCommand, { cmd: "connect" }>): Promise<void> {
  const start = now();
  const convergedAt: number[] = new Array(c.count).fill(NaN);
  for (let i = 0; i < c.count; i++) {
    const ns = `ns-${i % c.namespaces}`;
    const p: Proxy = { armedBytes: 0, armedResponses: 0, expected: false } as Proxy;
    p.client = new AdsClient({
      address: c.address,
      style: c.style,
      nodeId: c.style === "grpc" ? `grpc-bench-${i}` : `sidecar~10.200.${(i >> 8) & 255}.${i & 255}~bench-${i}.${ns}~${ns}.svc.cluster.local`,
      // Ten label sets in every namespace (not one per namespace): 100 (namespace, labels) pairs, as a fleet has
      // many workloads per namespace. Without a selector that looks at them, labels must not multiply the scopes.
      metadata: {
        NAMESPACE: ns,
        SERVICE_ACCOUNT: `bench-${i}`,
        LABELS: { app: `bench-${Math.floor(i / c.namespaces) % 10}` },
        PROXY_KIND: c.style === "grpc" ? "grpc" : "sidecar",
      },
      target: c.targets[i % c.targets.length],
      onArrival: (a) => {
        if (Number.isNaN(convergedAt[i]!) && p.client.converged()) convergedAt[i] = a.at - start;
        if (p.armedType && a.typeUrl === p.armedType) {
          p.firstAfterArm ??= a;
          p.armedBytes += a.bytes;
          p.armedResponses++;
        }
      },
    });
    proxies.push(p);
  }
  // All at once: the storm.
  for (const p of proxies) p.client.start();
  await until(() => convergedAt.every((t) => !Number.isNaN(t)), c.timeoutMs);
  const bytes = proxies.reduce((s, p) => s + p.client.bytesIn, 0);
  send({ event: "converged", ms: convergedAt.filter((t) => !Number.isNaN(t)), unconverged: convergedAt.filter((t) => Number.isNaN(t)).length, bytes });
}

process.on("message", (m: LoadgenCommand) => {
  void (async () => {
    switch (m.cmd) {
      case "connect":
        await connect(m);
        break;
      case "arm":
        for (const p of proxies) {
          p.armedType = m.typeUrl;
          p.expected = p.client.subscribedToAny(m.typeUrl, m.names);
          delete p.firstAfterArm;
          p.armedBytes = 0;
          p.armedResponses = 0;
        }
        send({ event: "armed" });
        break;
      case "collect": {
        const got = (p: Proxy) => !!p.firstAfterArm && p.firstAfterArm.at >= m.t0;
        const expected = proxies.filter((p) => p.expected);
        await until(() => expected.every(got), m.timeoutMs);
        // Let trailing responses of the same push land so byte counts are complete.
        await new Promise((r) => setTimeout(r, 300));
        const hit = expected.filter(got);
        send({
          event: "collected",
          latencies: hit.map((p) => p.firstAfterArm!.at - m.t0),
          subscribed: expected.length,
          missing: expected.length - hit.length,
          unaffectedPushed: proxies.filter((p) => !p.expected && got(p)).length,
          bytes: proxies.reduce((s, p) => s + p.armedBytes, 0),
          responses: proxies.reduce((s, p) => s + p.armedResponses, 0),
        });
        break;
      }
      case "close":
        for (const p of proxies) p.client.close();
        send({ event: "closed" });
        setTimeout(() => process.exit(0), 50);
        break;
    }
  })();
});
