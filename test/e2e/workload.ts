// A proxyless gRPC workload for the multi-host testbed, run on a host with `ip netns exec` (see hosts.ts).
//
//   node workload.ts --name NAME --bootstrap GRPC_BOOTSTRAP [--trust-domain TD]
//                    [--listen IP:PORT] [--call xds:///HOST:PORT]... [--interval MS] [--deadline MS]
//
// Everything it knows comes from the agent: the gRPC bootstrap the agent wrote (node identity, the xDS server,
// which is the agent's local xDS proxy, and the `file_watcher` certificate provider over the agent's rotated
// files).
//
// --listen: an echo server on the host's address with mTLS from the agent's certificate files (grpc-js's
//   FileWatcherCertificateProvider, configured exactly as the bootstrap's `certificate_providers.default`). It
//   requires a client certificate from the mesh root and answers with its own name and the caller's SPIFFE id.
//   Plain TLS credentials rather than an XdsServer: this testbed is about the network between hosts (discovery,
//   mTLS, a cut link, a control-plane restart); xDS-configured servers (`grpc/server?xds.resource.listening_address=`
//   listeners) are proven on loopback by test/xds-grpc-server.test.ts.
// --call: a client on `xds:///HOST:PORT` through @grpc/grpc-js-xds with XdsChannelCredentials, so whether it
//   speaks mTLS, with which certificate and which server SANs it accepts, is the control plane's cluster
//   config (DestinationRule ISTIO_MUTUAL -> certificate provider instances + SAN matchers). One call per target
//   every --interval ms, each reported on stdout as a JSON line.
//
// stdout carries only JSON lines: {"event":"listening",...}, {"event":"served",...}, {"event":"call",...}.
import fs from "node:fs";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as grpcXds from "@grpc/grpc-js-xds";
import { peerIdentity } from "@vmpilot/xds/ca/identity";

const { values: args } = parseArgs({
  options: {
    name: { type: "string" },
    bootstrap: { type: "string" },
    "trust-domain": { type: "string", default: "cluster.local" },
    listen: { type: "string" },
    call: { type: "string", multiple: true, default: [] },
    interval: { type: "string", default: "50" },
    deadline: { type: "string", default: "3000" },
  },
});
if (!args.name || !args.bootstrap) {
  process.stderr.write("workload: --name and --bootstrap are required\n");
  process.exit(2);
}
const name = args.name;
const bootstrapFile = args.bootstrap;
const trustDomain = args["trust-domain"]!;

function emit(event: string, fields: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ event, t: Date.now(), ...fields }) + "\n");
}

interface EchoReply {
  server: string;
  /** The caller's SPIFFE id as the server's TLS stack authenticated it. */
  peer: string;
}

const json = {
  serialize: (v: unknown): Buffer => Buffer.from(JSON.stringify(v ?? {})),
  deserialize: (b: Buffer): unknown => JSON.parse(b.toString("utf8") || "{}"),
};
const ECHO: grpc.ServiceDefinition = {
  Call: {
    path: "/vmpilot.e2e.Echo/Call",
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};

/** The bootstrap's file_watcher provider, as grpc-js-xds would build it for a channel. */
function certificateProvider(): grpc.experimental.FileWatcherCertificateProvider {
  const bootstrap = JSON.parse(fs.readFileSync(bootstrapFile, "utf8"));
  const instance = bootstrap.certificate_providers?.default;
  if (instance?.plugin_name !== "file_watcher") throw new Error(`${bootstrapFile}: no file_watcher certificate provider "default"`);
  const c = instance.config;
  return new grpc.experimental.FileWatcherCertificateProvider({
    certificateFile: c.certificate_file,
    privateKeyFile: c.private_key_file,
    caCertificateFile: c.ca_certificate_file,
    refreshIntervalMs: 1000,
  });
}

const servers: grpc.Server[] = [];
const clients: grpc.Client[] = [];
const timers: NodeJS.Timeout[] = [];

async function serve(listen: string): Promise<void> {
  const provider = certificateProvider();
  const server = new grpc.Server();
  server.addService(ECHO, {
    Call: (call: grpc.ServerUnaryCall<unknown, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) => {
      const peer = peerIdentity(call, trustDomain);
      const reply = { server: name, peer: peer.ok ? peer.spiffeId : `unauthenticated: ${peer.reason}` };
      emit("served", { peer: reply.peer });
      cb(null, reply);
    },
  });
  // requireClientCert: a caller without a mesh certificate does not get past the handshake.
  const creds = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, true);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(listen, creds, (e, p) => (e ? reject(e) : resolve(p))));
  servers.push(server);
  emit("listening", { address: listen, port });
}

type EchoClient = grpc.Client & {
  Call(req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: EchoReply) => void): void;
};
const EchoClientCtor = grpc.makeGenericClientConstructor(ECHO, "Echo");

/**
 * Link-failure detection is the channel's keepalive: proxyless gRPC has no sidecar to eject a silent peer, and
 * grpc-js-xds implements only the success-rate and failure-percentage outlier detectors (gRFC A50), not the
 * consecutive-errors one Istio's DestinationRule expresses. A ping unanswered for 1 s closes the connection,
 * round robin stops picking that subchannel, and reconnection backs off at most 2 s once the link is back.
 */
const CLIENT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 1000,
  "grpc.keepalive_timeout_ms": 1000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.max_reconnect_backoff_ms": 2000,
};

function callLoop(target: string, everyMs: number, deadlineMs: number): void {
  const client = new EchoClientCtor(target, new grpcXds.XdsChannelCredentials(grpc.credentials.createInsecure()), CLIENT_CHANNEL_OPTIONS) as unknown as EchoClient;
  clients.push(client);
  let seq = 0;
  const once = () => {
    const n = ++seq;
    const start = Date.now();
    client.Call({}, new grpc.Metadata(), { deadline: start + deadlineMs }, (err, reply) => {
      if (err) emit("call", { target, seq: n, start, ok: false, code: grpc.status[err.code], details: err.details });
      else emit("call", { target, seq: n, start, ok: true, server: reply!.server, peer: reply!.peer });
    });
  };
  // Calls overlap when one hangs (a cut link): a steady rate keeps the report's timeline even.
  timers.push(setInterval(once, everyMs));
  once();
}

function shutdown(): void {
  for (const t of timers) clearInterval(t);
  for (const c of clients) c.close();
  for (const s of servers) s.forceShutdown();
  process.exit(0);
}
process.once("SIGTERM", shutdown);
process.once("SIGINT", shutdown);

// One process-wide XdsClient from GRPC_XDS_BOOTSTRAP: the way an application on the VM is configured.
process.env.GRPC_XDS_BOOTSTRAP = bootstrapFile;
grpcXds.register();

try {
  if (args.listen) await serve(args.listen);
  for (const target of args.call!) callLoop(target, Number(args.interval), Number(args.deadline));
} catch (e) {
  process.stderr.write(`workload ${name}: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
}
