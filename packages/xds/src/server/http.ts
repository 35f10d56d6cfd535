// The control plane's HTTP port: readiness, Prometheus metrics and the debug views operators (and
// `vmpilot proxy-status`) read. JSON only, read only, no state of its own.
import http from "node:http";
import type { AddressInfo } from "node:net";
import type client from "prom-client";
import type { Origin, RegistrySnapshot } from "@vmpilot/registry";
import type { StreamStatus } from "./stream.js";

export interface HttpViews {
  /** Undefined when ready, else why not (one line per reason). */
  notReady(): string[] | undefined;
  /** Shown on a ready /ready: unsynced sources readiness does not wait for. */
  readyNotes?(): string[];
  snapshot(): RegistrySnapshot;
  syncz(): StreamStatus[];
  metrics: client.Registry;
}

export function formatOrigin(o: Origin): string {
  switch (o.type) {
    case "file":
      return `${o.file}:${o.line}:${o.column}`;
    case "consul":
      return `consul:${o.datacenter}/${o.service}@${o.index}`;
    case "auto-registered":
      return `auto-registered:${o.group}/${o.namespace} by ${o.proxyId}`;
  }
}

const iso = (ms: number | undefined): string | undefined => (ms === undefined ? undefined : new Date(ms).toISOString());

/** /debug/syncz: one entry per xDS stream. Times as ISO strings. */
export function syncz(streams: StreamStatus[]): unknown {
  return streams.map((s) => ({
    proxyId: s.proxyId,
    kind: s.kind,
    namespace: s.namespace,
    protocol: s.protocol,
    streamId: s.streamId,
    peer: s.peer,
    connectedAt: iso(s.connectedAt),
    ...(s.health ? { health: { healthy: s.health.healthy, ...(s.health.message ? { message: s.health.message } : {}), at: iso(s.health.at) } } : {}),
    types: Object.fromEntries(
      s.types.map((t) => [
        t.type,
        {
          typeUrl: t.typeUrl,
          subscription: t.subscription.wildcard ? ["*", ...t.subscription.names] : t.subscription.names,
          sent: t.sent && { version: t.sent.version, nonce: t.sent.nonce, at: iso(t.sent.at), resources: t.sent.resources, removed: t.sent.removed },
          acked: t.acked && { version: t.acked.version, nonce: t.acked.nonce, at: iso(t.acked.at) },
          pending: t.pending,
          lastNack: t.lastNack && { version: t.lastNack.version, nonce: t.lastNack.nonce, message: t.lastNack.message, at: iso(t.lastNack.at) },
        },
      ]),
    ),
  }));
}

export function configz(snap: RegistrySnapshot): unknown {
  // A file ServiceEntry decorating a Consul service: each side names the other's origin.
  const decorates = new Map<string, { service: string; origin: string }[]>();
  const provided: unknown[] = [];
  for (const s of snap.services.values()) {
    if (s.decoratedBy) {
      const list = decorates.get(s.decoratedBy) ?? [];
      list.push({ service: s.key, origin: formatOrigin(s.origin) });
      decorates.set(s.decoratedBy, list);
    }
    if (s.origin.type === "file" || snap.configs.has(s.configKey)) continue;
    const decorator = s.decoratedBy ? snap.configs.get(s.decoratedBy) : undefined;
    const [kind, , name] = s.configKey.split("/"); // `ConsulService/NAMESPACE/NAME`
    provided.push({
      kind,
      namespace: s.namespace,
      name,
      hostname: s.hostname,
      origin: formatOrigin(s.origin),
      ...(s.origin.type === "consul" ? { consul: { datacenter: s.origin.datacenter, service: s.origin.service, index: s.origin.index } } : {}),
      ...(s.decoratedBy ? { decoratedBy: { config: s.decoratedBy, origin: decorator ? formatOrigin(decorator.origin) : undefined } } : {}),
    });
  }
  return {
    version: snap.version,
    mesh: snap.mesh,
    sources: snap.sources,
    problems: snap.problems,
    configs: [...snap.configs.entries()].map(([key, o]) => ({
      kind: o.kind,
      apiVersion: o.apiVersion,
      namespace: o.metadata.namespace,
      name: o.metadata.name,
      origin: formatOrigin(o.origin),
      ...(decorates.has(key) ? { decorates: decorates.get(key) } : {}),
      metadata: o.metadata,
      spec: o.spec,
      ...(o.status ? { status: o.status } : {}),
    })),
    // Services a source provides directly (Consul), which no config object declares.
    providedServices: provided,
  };
}

export function registryz(snap: RegistrySnapshot): unknown {
  return {
    version: snap.version,
    services: [...snap.services.values()].map((s) => ({
      ...s,
      origin: formatOrigin(s.origin),
      endpoints: (snap.endpoints.get(s.key) ?? []).map((e) => ({ ...e, origin: formatOrigin(e.origin) })),
    })),
  };
}

function send(res: http.ServerResponse, status: number, body: string, type: string): void {
  res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
  res.end(body);
}

const json = (res: http.ServerResponse, status: number, v: unknown): void => send(res, status, `${JSON.stringify(v, null, 2)}\n`, "application/json");

export function createHttpServer(views: HttpViews): http.Server {
  return http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (req.method !== "GET" && req.method !== "HEAD") return send(res, 405, "method not allowed\n", "text/plain");
    void (async () => {
      switch (url.pathname) {
        case "/ready": {
          const reasons = views.notReady();
          if (reasons) return send(res, 503, `not ready:\n${reasons.map((r) => `  ${r}\n`).join("")}`, "text/plain");
          const notes = views.readyNotes?.() ?? [];
          return send(res, 200, `ready\n${notes.map((n) => `  ${n}\n`).join("")}`, "text/plain");
        }
        case "/metrics":
          return send(res, 200, await views.metrics.metrics(), views.metrics.contentType);
        case "/debug/syncz":
          return json(res, 200, syncz(views.syncz()));
        case "/debug/configz":
          return json(res, 200, configz(views.snapshot()));
        case "/debug/registryz":
          return json(res, 200, registryz(views.snapshot()));
        case "/":
          return send(res, 200, ["/ready", "/metrics", "/debug/syncz", "/debug/configz", "/debug/registryz", ""].join("\n"), "text/plain");
      }
      send(res, 404, "not found\n", "text/plain");
    })().catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, `${(err as Error).message}\n`, "text/plain");
      else res.destroy();
    });
  });
}

export async function listenHttp(server: http.Server, host: string, port: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
