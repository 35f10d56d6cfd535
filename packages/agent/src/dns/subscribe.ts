// The agent's own xDS subscription to the name table (type vmpilot.dns.v1.NameTable): one SotW ADS stream,
// wildcard subscription, ACK after each table is applied, NACK (with error_detail) when one cannot be decoded,
// reconnect with backoff when the stream ends. Envoy never asks for this type; the agent does, for its DNS proxy.
import * as grpc from "@grpc/grpc-js";
import { adsServiceDefinition, decodeSotwResponse, encodeSotwRequest, type SotwRequest } from "@vmpilot/xds/server/ads";
import { decodeNameTable, NAME_TABLE_TYPE_URL, type NameTable } from "@vmpilot/xds/generators/nametable";
import type { XdsNode } from "@vmpilot/xds/proxy-view";
import { Backoff } from "../backoff.js";
import { agentLogger, type Logger } from "../log.js";

const AdsClient = grpc.makeGenericClientConstructor(adsServiceDefinition(), "AggregatedDiscoveryService");

export interface NameTableSubscriptionOptions {
  /** The control plane's xDS address, `host:port`. */
  address: string;
  node: XdsNode;
  onTable: (table: NameTable) => void;
  credentials?: grpc.ChannelCredentials;
  log?: Logger;
}

export interface NameTableSubscription {
  close(): void;
}

export function subscribeNameTable(opts: NameTableSubscriptionOptions): NameTableSubscription {
  const log = opts.log ?? agentLogger("dns");
  const client = new AdsClient(opts.address, opts.credentials ?? grpc.credentials.createInsecure());
  const backoff = new Backoff(500, 30_000);
  let call: grpc.ClientDuplexStream<Buffer, Buffer> | undefined;
  let retry: NodeJS.Timeout | undefined;
  let closed = false;
  let lastVersion = "";

  const send = (req: Partial<SotwRequest>): void => {
    call?.write(encodeSotwRequest({ type_url: NAME_TABLE_TYPE_URL, resource_names: ["*"], ...req }));
  };

  const open = (): void => {
    if (closed) return;
    const stream = (client as unknown as { StreamAggregatedResources(): grpc.ClientDuplexStream<Buffer, Buffer> }).StreamAggregatedResources();
    call = stream;
    stream.on("data", (buf: Buffer) => {
      const res = decodeSotwResponse(buf);
      if (res.type_url !== NAME_TABLE_TYPE_URL) return;
      backoff.reset();
      try {
        const resource = res.resources.find((r) => r.type_url === NAME_TABLE_TYPE_URL);
        opts.onTable(resource ? decodeNameTable(resource.value) : { table: {} });
        lastVersion = res.version_info;
        send({ version_info: res.version_info, response_nonce: res.nonce });
      } catch (err) {
        log.warn(`name table version ${res.version_info} rejected: ${(err as Error).message}`);
        send({ version_info: lastVersion, response_nonce: res.nonce, error_detail: { code: grpc.status.INVALID_ARGUMENT, message: (err as Error).message } });
      }
    });
    stream.on("error", () => {
      /* reported through "status" */
    });
    stream.on("status", (s: grpc.StatusObject) => {
      if (call !== stream) return;
      call = undefined;
      if (closed) return;
      const delay = backoff.next();
      log.info(`name table stream ended (${grpc.status[s.code]}: ${s.details}); reconnecting in ${delay} ms`);
      retry = setTimeout(open, delay);
    });
    // The node goes on the first request only; a reconnect presents the version it has (the server may skip
    // resending an unchanged table).
    send({ node: opts.node, version_info: lastVersion, response_nonce: "" });
  };

  open();
  return {
    close(): void {
      closed = true;
      if (retry) clearTimeout(retry);
      const c = call;
      call = undefined;
      c?.cancel();
      client.close();
    },
  };
}
