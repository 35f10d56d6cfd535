// A real @grpc/grpc-js SDS client for the agent tests: the service definition comes from the Envoy protos in
// @grpc/grpc-js-xds's deps/ (loaded by @grpc/proto-loader, nothing hand-written), and secrets in responses are
// decoded strictly with the same protos.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { expect } from "chai";
import { decodeToJson } from "@vmpilot/xds/protojson";
import { envoyProtoIncludeDirs } from "@vmpilot/xds/protos";
import { until } from "./helpers.js";

export type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export const SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
export const NODE = { id: "router~10.0.0.9~ingress-1.istio-system~istio-system.svc.cluster.local", cluster: "ingress-1.istio-system" };

export function sdsClientConstructor(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync("envoy/service/secret/v3/sds.proto", { includeDirs: envoyProtoIncludeDirs(), keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as J;
  return pkg.envoy.service.secret.v3.SecretDiscoveryService as grpc.ServiceClientConstructor;
}

export interface Received {
  version_info?: string;
  system_version_info?: string;
  nonce: string;
  type_url: string;
  /** Secrets decoded with the Envoy protos (SotW: Any; delta: Resource.resource), with the delta version when given. */
  secrets: J[];
  versions: Record<string, string>;
  removed: string[];
}

/** A bidi SDS stream with a queue of responses; `next()` waits for the next one with a deadline. */
export class SdsTestStream {
  private readonly queue: Received[] = [];
  ended: grpc.StatusObject | undefined;

  constructor(readonly call: grpc.ClientDuplexStream<J, J>) {
    call.on("data", (m: J) => {
      const delta = "system_version_info" in m;
      const anys: J[] = delta ? m.resources.map((r: J) => r.resource) : m.resources;
      const versions: Record<string, string> = {};
      if (delta) for (const r of m.resources as J[]) versions[r.name] = r.version;
      this.queue.push({
        ...(delta ? { system_version_info: m.system_version_info } : { version_info: m.version_info }),
        nonce: m.nonce,
        type_url: m.type_url,
        secrets: anys.map((a) => {
          expect(a.type_url).to.equal(SECRET_TYPE_URL);
          return decodeToJson("envoy.extensions.transport_sockets.tls.v3.Secret", a.value) as J;
        }),
        versions,
        removed: m.removed_resources ?? [],
      });
    });
    call.on("status", (s: grpc.StatusObject) => (this.ended = s));
    call.on("error", () => undefined); // the status event carries it
  }

  send(req: J): void {
    this.call.write({ type_url: SECRET_TYPE_URL, ...req });
  }

  async next(what: string, timeoutMs = 10_000): Promise<Received> {
    await until(what, () => this.queue.length > 0, timeoutMs, 10);
    return this.queue.shift()!;
  }

  get pending(): number {
    return this.queue.length;
  }
}

export const secretNames = (r: Received): string[] => r.secrets.map((s) => s.name).sort();
