// A tiny gRPC test service, no protos: one unary method carrying JSON. Each server answers with its own
// name, so a test can attribute every call; requests can ask it to sleep, and a server can be told to fail
// a fraction of its calls (a flaky backend for retry tests).
import * as grpc from "@grpc/grpc-js";

export interface EchoRequest {
  /** Milliseconds to wait before answering. */
  sleepMs?: number;
}

export interface EchoReply {
  server: string;
  /** Request metadata as the server saw it (to prove header routing and retries reached it). */
  headers: Record<string, string>;
}

const json = {
  serialize: (v: unknown): Buffer => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer): unknown => JSON.parse(b.toString("utf8") || "{}"),
};

export const ECHO_SERVICE: grpc.ServiceDefinition = {
  Call: {
    path: "/vmpilot.test.Echo/Call",
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};

const EchoClientCtor = grpc.makeGenericClientConstructor(ECHO_SERVICE, "Echo");

export interface EchoServerOptions {
  name: string;
  host: string;
  /** Fail calls with UNAVAILABLE while this returns true (called once per call, with the call's ordinal). */
  failWhen?: (n: number) => boolean;
}

export class EchoServer {
  readonly server = new grpc.Server();
  port = 0;
  calls = 0;
  failures = 0;

  constructor(readonly opts: EchoServerOptions) {
    this.server.addService(ECHO_SERVICE, {
      Call: (call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) => {
        const n = ++this.calls;
        if (this.opts.failWhen?.(n)) {
          this.failures++;
          cb({ code: grpc.status.UNAVAILABLE, details: `${this.opts.name} is flaky (call ${n})` });
          return;
        }
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(call.metadata.getMap())) headers[k] = String(v);
        const reply = { server: this.opts.name, headers };
        const sleep = call.request?.sleepMs ?? 0;
        if (sleep > 0) setTimeout(() => cb(null, reply), sleep);
        else cb(null, reply);
      },
    });
  }

  async start(): Promise<this> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${this.opts.host}:0`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    return this;
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

export async function startEchoServers(specs: EchoServerOptions[]): Promise<EchoServer[]> {
  return Promise.all(specs.map((s) => new EchoServer(s).start()));
}

export type EchoClient = grpc.Client & {
  Call(req: EchoRequest, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: EchoReply) => void): grpc.ClientUnaryCall;
};

export function echoClient(target: string, options: grpc.ChannelOptions = {}): EchoClient {
  return new EchoClientCtor(target, grpc.credentials.createInsecure(), options) as unknown as EchoClient;
}

export interface CallResult {
  server?: string;
  code: grpc.status;
  details?: string;
  elapsedMs: number;
  reply?: EchoReply;
}

/** One call; never throws (failures come back as a status code). */
export function call(client: EchoClient, req: EchoRequest = {}, headers: Record<string, string> = {}, deadlineMs = 10_000): Promise<CallResult> {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  const start = performance.now();
  return new Promise((resolve) => {
    client.Call(req, md, { deadline: Date.now() + deadlineMs }, (err, reply) => {
      const elapsedMs = performance.now() - start;
      if (err) resolve({ code: err.code, details: err.details, elapsedMs });
      else resolve({ server: reply!.server, code: grpc.status.OK, elapsedMs, reply: reply! });
    });
  });
}

/** `n` calls, `concurrency` at a time; returns how many each server answered (and failures by code). */
export async function tally(client: EchoClient, n: number, headers: Record<string, string> = {}, concurrency = 20): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        const r = await call(client, {}, headers);
        const key = r.server ?? `error:${grpc.status[r.code]}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    }),
  );
  return counts;
}
