// The agent's HTTP status port (15020) and, when no Envoy serves it, the readiness port (15021).
//   GET /healthz/ready  200 "ready" or 503 with the reasons (one per line): what load balancers and the
//                       Envoy readiness listener (15021 -> agent) ask.
//   GET /status         JSON: identity, certificate (serial, validity), Envoy and probe state.
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface Readiness {
  ready: boolean;
  /** Why not, when not. */
  reasons: string[];
}

export interface StatusSource {
  readiness(): Readiness;
  status(): unknown;
}

export interface ListenOn {
  host: string;
  port: number;
}

function handler(source: StatusSource, withStatus: boolean): http.RequestListener {
  return (req, res) => {
    const url = new URL(req.url ?? "/", "http://agent");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (url.pathname === "/healthz/ready") {
      const r = source.readiness();
      res.writeHead(r.ready ? 200 : 503, { "content-type": "text/plain; charset=utf-8" });
      res.end(r.ready ? "ready\n" : `not ready:\n${r.reasons.join("\n")}\n`);
      return;
    }
    if (withStatus && url.pathname === "/status") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ...(source.status() as object), ...source.readiness() }, null, 2) + "\n");
      return;
    }
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end(`not found; try /healthz/ready${withStatus ? " or /status" : ""}\n`);
  };
}

async function listen(server: http.Server, on: ListenOn): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(on.port, on.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server.address() as AddressInfo;
}

export class StatusServer {
  private readonly servers: http.Server[] = [];
  /** Bound addresses (tests pass port 0). */
  statusAddress: AddressInfo | undefined;
  readinessAddress: AddressInfo | undefined;

  constructor(private readonly source: StatusSource) {}

  /** Starts the status port and, if given, a readiness-only port. */
  async start(status: ListenOn, readiness?: ListenOn): Promise<void> {
    const s = http.createServer(handler(this.source, true));
    this.servers.push(s);
    this.statusAddress = await listen(s, status);
    if (readiness) {
      const r = http.createServer(handler(this.source, false));
      this.servers.push(r);
      this.readinessAddress = await listen(r, readiness);
    }
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.servers.map(
        (s) =>
          new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
    this.servers.length = 0;
  }
}
