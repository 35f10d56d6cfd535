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
  /**
   * Fixed credentials, or a function asked on every (re)connection, so that a stream opened after a
   * certificate renewal presents the renewed certificate (established streams keep their TLS session).
   * Default: plaintext.
   */
  credentials?: grpc.ChannelCredentials | (() => grpc.ChannelCredentials | Promise<grpc.ChannelCredentials>);
  /** E.g. the secure port's SNI override (`SECURE_PORT_CHANNEL_OPTIONS`). */
  channelOptions?: grpc.ChannelOptions;
  log?: Logger;
  /** Reconnect backoff bounds (default 500 ms .. 30 s). */
  backoff?: { minMs: number; maxMs: number };
}

export interface NameTableSubscriptionStatus {
  /** A stream is open and the control plane has answered on it. */
  connected: boolean;
  /** Tables applied since the subscription started. */
  tables: number;
  /** version_info of the table in use ("" before the first). */
  version: string;
  lastUpdate?: Date;
  /** Why the last stream ended, or the last table was rejected. */
  lastError?: string;
}

export interface NameTableSubscription {
  close(): void;
  status(): NameTableSubscriptionStatus;
}

export function subscribeNameTable(opts: NameTableSubscriptionOptions): NameTableSubscription {
  const log = opts.log ?? agentLogger("dns");
  const backoff = new Backoff(opts.backoff?.minMs ?? 500, opts.backoff?.maxMs ?? 30_000);
  let client: grpc.Client | undefined;
  let call: grpc.ClientDuplexStream<Buffer, Buffer> | undefined;
  let retry: NodeJS.Timeout | undefined;
  let closed = false;
  let lastVersion = "";
  const st: NameTableSubscriptionStatus = { connected: false, tables: 0, version: "" };

  const retryLater = (why: string): void => {
    st.connected = false;
    st.lastError = why;
    if (closed) return;
    const delay = backoff.next();
    log.info(`name table stream ended (${why}); reconnecting in ${delay} ms`);
    retry = setTimeout(() => void open(), delay);
  };

  /** A fresh channel per connection when credentials can change; one channel for all when they cannot. */
  const channel = async (): Promise<grpc.Client> => {
    const creds = opts.credentials;
    if (client && typeof creds !== "function") return client;
    const c = typeof creds === "function" ? await creds() : (creds ?? grpc.credentials.createInsecure());
    client?.close();
    client = new AdsClient(opts.address, c, opts.channelOptions ?? {});
    return client;
  };

  const send = (req: Partial<SotwRequest>): void => {
    call?.write(encodeSotwRequest({ type_url: NAME_TABLE_TYPE_URL, resource_names: ["*"], ...req }));
  };

  const open = async (): Promise<void> => {
    if (closed) return;
    let ch: grpc.Client;
    try {
      ch = await channel();
    } catch (err) {
      return retryLater(`no credentials: ${(err as Error).message}`);
    }
    if (closed) return ch.close(); // closed while the credentials were being read
    const stream = (ch as unknown as { StreamAggregatedResources(): grpc.ClientDuplexStream<Buffer, Buffer> }).StreamAggregatedResources();
    call = stream;
    stream.on("data", (buf: Buffer) => {
      const res = decodeSotwResponse(buf);
      if (res.type_url !== NAME_TABLE_TYPE_URL) return;
      backoff.reset();
      st.connected = true;
      try {
        const resource = res.resources.find((r) => r.type_url === NAME_TABLE_TYPE_URL);
        opts.onTable(resource ? decodeNameTable(resource.value) : { table: {} });
        lastVersion = res.version_info;
        st.tables++;
        st.version = res.version_info;
        st.lastUpdate = new Date();
        send({ version_info: res.version_info, response_nonce: res.nonce });
      } catch (err) {
        st.lastError = `version ${res.version_info} rejected: ${(err as Error).message}`;
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
      retryLater(`${grpc.status[s.code]}: ${s.details}`);
    });
    // The node goes on the first request only; a reconnect presents the version it has (the server may skip
    // resending an unchanged table).
    send({ node: opts.node, version_info: lastVersion, response_nonce: "" });
  };

  void open();
  return {
    close(): void {
      closed = true;
      st.connected = false;
      if (retry) clearTimeout(retry);
      const c = call;
      call = undefined;
      c?.cancel();
      client?.close();
    },
    status: () => ({ ...st }),
  };
}
