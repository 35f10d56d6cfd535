// Our own ADS client for protocol-level tests: it sends exactly the requests a test spells out (including
// the ones real clients never send: stale nonces, NACKs on demand, delta with initial_resource_versions)
// and queues every response so a test can assert on the precise sequence.
import * as grpc from "@grpc/grpc-js";
import {
  adsServiceDefinition,
  type DecodedDeltaResponse,
  type DecodedSotwResponse,
  decodeDeltaResponse,
  decodeSotwResponse,
  type DeltaRequest,
  encodeDeltaRequest,
  encodeSotwRequest,
  type SotwRequest,
} from "@vmpilot/xds/server/ads";
import type { XdsNode } from "@vmpilot/xds/proxy-view";

const AdsClient = grpc.makeGenericClientConstructor(adsServiceDefinition(), "AggregatedDiscoveryService");

type Decoded<P> = P extends "sotw" ? DecodedSotwResponse : DecodedDeltaResponse;
type Request<P> = P extends "sotw" ? Partial<SotwRequest> : Partial<DeltaRequest>;

export class RawAdsClient<P extends "sotw" | "delta"> {
  private readonly client: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<Buffer, Buffer>;
  private readonly queue: Decoded<P>[] = [];
  private waiter: (() => void) | undefined;
  /** The stream's final status, once it ended. */
  status: grpc.StatusObject | undefined;
  private barriers = 0;

  constructor(
    address: string,
    readonly protocol: P,
    credentials = grpc.credentials.createInsecure(),
    options: grpc.ChannelOptions = {},
  ) {
    this.client = new AdsClient(address, credentials, options);
    const method = protocol === "sotw" ? "StreamAggregatedResources" : "DeltaAggregatedResources";
    this.call = (this.client as unknown as Record<string, () => grpc.ClientDuplexStream<Buffer, Buffer>>)[method]!.call(this.client);
    this.call.on("data", (buf: Buffer) => {
      this.queue.push((protocol === "sotw" ? decodeSotwResponse(buf) : decodeDeltaResponse(buf)) as Decoded<P>);
      this.wake();
    });
    this.call.on("status", (s) => {
      this.status = s;
      this.wake();
    });
    this.call.on("error", () => {
      /* reported through "status" */
    });
  }

  send(req: Request<P>): void {
    this.call.write(this.protocol === "sotw" ? encodeSotwRequest(req as Partial<SotwRequest>) : encodeDeltaRequest(req as Partial<DeltaRequest>));
  }

  /** The next response (of any type), waiting up to `timeoutMs`. */
  async next(timeoutMs = 5000): Promise<Decoded<P>> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      if (this.status) throw new Error(`stream ended: ${grpc.status[this.status.code]} ${this.status.details}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.queue.shift()!;
  }

  /** Responses already received and not yet consumed. */
  get buffered(): readonly Decoded<P>[] {
    return this.queue;
  }

  /**
   * Proves that the server sent nothing since the last consumed response: subscribes to a type nobody else
   * uses (a first request is always answered) and expects that answer to be the very next response. The
   * server handles a stream's requests in order, so anything it meant to send earlier would come first.
   */
  async expectNothingPending(): Promise<void> {
    const typeUrl = `type.googleapis.com/vmpilot.test.Barrier${++this.barriers}`;
    if (this.protocol === "sotw") this.send({ type_url: typeUrl, resource_names: ["*"] } as Request<P>);
    else this.send({ type_url: typeUrl, resource_names_subscribe: ["*"] } as Request<P>);
    const r = await this.next();
    if (r.type_url !== typeUrl) throw new Error(`expected no response before the barrier, got one for ${r.type_url} (nonce ${r.nonce})`);
    // ACK it, so the barrier type holds no response in flight (which would hold back removals of other types).
    if (this.protocol === "sotw") this.send({ type_url: typeUrl, resource_names: ["*"], response_nonce: r.nonce } as Request<P>);
    else this.send({ type_url: typeUrl, response_nonce: r.nonce } as Request<P>);
  }

  /** Waits for the stream to end and returns its status. */
  async ended(timeoutMs = 5000): Promise<grpc.StatusObject> {
    const deadline = Date.now() + timeoutMs;
    while (!this.status) {
      if (Date.now() > deadline) throw new Error(`stream did not end within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    return this.status;
  }

  /** Half-closes the stream from our side (no more requests). */
  halfClose(): void {
    this.call.end();
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }

  private wake(): void {
    this.waiter?.();
  }
}

export function testNode(id: string, metadata: Record<string, unknown> = {}): XdsNode {
  return { id, metadata: { NAMESPACE: "default", ...metadata } };
}
