// The agent's SDS server: envoy.service.secret.v3.SecretDiscoveryService on a unix socket, what Istio's
// istio-agent serves to its Envoy. A gateway's bootstrap reaches it through the static cluster `sds-grpc`
// (bootstrap/envoy.ts) and the control plane references Gateway credentialName secrets through that cluster
// (xds generators/gateway-tls.ts). It serves what gateway-credentials.ts found on disk.
//
// Why a server and not files: a secret that is not on the VM gets NO answer, which Envoy handles per
// subscription (the listener that uses it keeps warming, bounded by Envoy's initial_fetch_timeout; at Envoy's
// start that holds back every listener, which only open once all have initialised), whereas a missing
// path_config_source file makes Envoy reject the whole LDS update.
//
// Protocol (xDS, resource type Secret):
// - StreamSecrets (SotW; what Envoy uses with api_type GRPC). Each request names the secrets the stream wants
//   (Envoy opens one stream per secret, but a stream may name several); a response carries only the requested
//   secrets that exist and whose content the stream has not been sent yet: SDS is not a "complete" type, a
//   secret left out of a response is untouched, and an empty response would be NACKed by Envoy ("Missing SDS
//   resources"), so none is ever sent. A request whose response_nonce is the latest response's is an ACK, or a
//   NACK when it has error_detail (whatever its version_info says); stale nonces are not ACKs. At most one
//   response is un-ACKed per stream: changes made meanwhile go out when the answer comes. A NACKed version is
//   remembered as sent, so it is not re-sent in a loop; the next content change is sent.
// - DeltaSecrets (incremental; Envoy with api_type DELTA_GRPC): the same, with subscribe/unsubscribe and
//   initial_resource_versions (what a reconnecting Envoy already has is not re-sent).
//
// Removal. SDS resources are singletons owned by the listener or cluster that references them: Envoy never
// drops one on the server's word. In SotW there is no way to say "removed" for a non-complete type, and in
// delta Envoy ignores a removed secret (older versions NACK it). So when a credential's directory is deleted the
// agent stops serving it (new subscriptions, new streams and a restarted Envoy do not get it) and sends nothing
// to the streams that have it: Envoy keeps using the copy it holds until the Gateway server that names it is
// removed (LDS drops the listener and with it the subscription) or Envoy restarts. That is Envoy's and Istio's
// behaviour; revoking a certificate means removing the Gateway server (or replacing the files), not only the
// files. The agent logs it (gateway-credentials.ts).
//
// The wire codec is @vmpilot/xds's (the ADS server's): requests are DiscoveryRequest/DeltaDiscoveryRequest
// decoded with the Envoy protos, responses are written around secrets encoded once per content change.
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { encodeJson } from "@vmpilot/xds/protojson";
import { TypeUrl, typeNameOfUrl } from "@vmpilot/xds/protos";
import { decodeDeltaRequest, decodeSotwRequest, encodeDeltaResponse, encodeSotwResponse, type WireResource } from "@vmpilot/xds/server/ads";
import type { Logger } from "./log.js";

export const SDS_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService";
export const SDS_METHODS = {
  StreamSecrets: `/${SDS_SERVICE}/StreamSecrets`,
  DeltaSecrets: `/${SDS_SERVICE}/DeltaSecrets`,
} as const;

const SECRET_TYPE = typeNameOfUrl(TypeUrl.Secret);
const identity = (b: Buffer): Buffer => b;

function rawBidi(p: string, originalName: string): grpc.MethodDefinition<Buffer, Buffer> & { originalName: string } {
  return { path: p, requestStream: true, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity, originalName };
}

/** Secret bytes and a content version (the same content always gets the same version, across restarts too). */
export function encodeSecret(secret: Record<string, unknown>): WireResource {
  const name = secret.name;
  if (typeof name !== "string" || name === "") throw new Error("a Secret needs a name");
  const bytes = encodeJson(SECRET_TYPE, secret);
  return { name, version: createHash("sha256").update(bytes).digest("hex").slice(0, 16), bytes };
}

export interface SdsServerOptions {
  logger: Logger;
  /** What to tell the operator about a secret Envoy asks for and the agent does not have. */
  missingHint?: (name: string) => string;
}

export interface SdsStreamStatus {
  protocol: "sotw" | "delta";
  /** Secrets the stream asked for, sorted. */
  requested: string[];
  /** Secret name -> the version the proxy ACKed last. */
  acked: Record<string, string>;
  lastNack?: { names: string[]; message: string };
}

export interface SdsStatus {
  served: string[];
  /** Asked for by some stream but not (yet) on disk. */
  missing: string[];
  streams: SdsStreamStatus[];
}

/** What a stream sent in its one un-ACKed response. */
interface Pending {
  nonce: string;
  versions: Map<string, string>;
}

/** State common to both protocols: what the stream wants, what it was sent, what it ACKed. */
abstract class SdsStream {
  readonly wanted = new Set<string>();
  /** Name -> version last sent (whether ACKed, NACKed or in flight): what must not be sent again. */
  protected readonly sent = new Map<string, string>();
  protected readonly acked = new Map<string, string>();
  protected pending: Pending | undefined;
  private nonces = 0;
  lastNack: { names: string[]; message: string } | undefined;

  constructor(
    protected readonly server: SdsServer,
    readonly call: grpc.ServerDuplexStream<Buffer, Buffer>,
    readonly protocol: "sotw" | "delta",
  ) {}

  protected nextNonce(): string {
    return String(++this.nonces);
  }

  /** An answer to the pending response: ACK, or NACK with error_detail. Stale nonces are ignored. */
  protected answered(nonce: string, error: { message: string } | undefined): void {
    if (!this.pending || nonce !== this.pending.nonce) return;
    const { versions } = this.pending;
    this.pending = undefined;
    if (error) {
      // `sent` keeps the rejected versions: the same content is not offered again, the next change is.
      this.lastNack = { names: [...versions.keys()].sort(), message: error.message };
      this.server.nacked(this.lastNack.names, error.message);
      return;
    }
    for (const [name, version] of versions) this.acked.set(name, version);
  }

  protected unsubscribe(name: string): void {
    this.wanted.delete(name);
    // Envoy drops its copy with the subscription: a later subscription must be answered again.
    this.sent.delete(name);
    this.acked.delete(name);
  }

  /** Sends what the stream wants, has not been sent, and exists; at most one response in flight. */
  flush(): void {
    if (this.pending) return;
    const out: WireResource[] = [];
    for (const name of this.wanted) {
      const res = this.server.secret(name);
      if (res && this.sent.get(name) !== res.version) out.push(res);
    }
    if (out.length === 0) return;
    const nonce = this.nextNonce();
    const versions = new Map(out.map((r) => [r.name, r.version]));
    for (const r of out) this.sent.set(r.name, r.version);
    this.pending = { nonce, versions };
    this.call.write(this.encode(out, nonce));
  }

  status(): SdsStreamStatus {
    return { protocol: this.protocol, requested: [...this.wanted].sort(), acked: Object.fromEntries([...this.acked].sort()), ...(this.lastNack ? { lastNack: this.lastNack } : {}) };
  }

  abstract onRequest(buf: Buffer): void;
  protected abstract encode(resources: WireResource[], nonce: string): Buffer;
}

class SotwSdsStream extends SdsStream {
  onRequest(buf: Buffer): void {
    const req = decodeSotwRequest(buf);
    if (req.type_url !== TypeUrl.Secret) throw new Error(`StreamSecrets serves ${TypeUrl.Secret}, not ${JSON.stringify(req.type_url)}`);
    if (req.response_nonce) this.answered(req.response_nonce, req.error_detail);
    // Every SotW request restates the whole subscription (SDS has no wildcard: no names is no secrets).
    const names = new Set(req.resource_names);
    for (const name of [...this.wanted]) if (!names.has(name)) this.unsubscribe(name);
    for (const name of names) this.wanted.add(name);
    this.server.requested(names);
    this.flush();
  }

  protected encode(resources: WireResource[], nonce: string): Buffer {
    return encodeSotwResponse({ version_info: this.server.version(), type_url: TypeUrl.Secret, nonce, resources });
  }
}

class DeltaSdsStream extends SdsStream {
  private first = true;

  onRequest(buf: Buffer): void {
    const req = decodeDeltaRequest(buf);
    if (req.type_url !== TypeUrl.Secret) throw new Error(`DeltaSecrets serves ${TypeUrl.Secret}, not ${JSON.stringify(req.type_url)}`);
    if (this.first) {
      this.first = false;
      // A reconnecting Envoy says what it holds; what is unchanged is not sent again.
      for (const [name, version] of Object.entries(req.initial_resource_versions)) {
        this.sent.set(name, version);
        this.acked.set(name, version);
      }
    }
    if (req.response_nonce) this.answered(req.response_nonce, req.error_detail);
    for (const name of req.resource_names_unsubscribe) this.unsubscribe(name);
    for (const name of req.resource_names_subscribe) this.wanted.add(name);
    this.server.requested(new Set(req.resource_names_subscribe));
    this.flush();
  }

  protected encode(resources: WireResource[], nonce: string): Buffer {
    // Never removed_resources: see the header (Envoy keeps an SDS secret until its owner goes).
    return encodeDeltaResponse({ system_version_info: this.server.version(), type_url: TypeUrl.Secret, nonce, resources, removed_resources: [] });
  }
}

export class SdsServer {
  private readonly grpcServer = new grpc.Server();
  private secrets = new Map<string, WireResource>();
  private readonly streams = new Set<SdsStream>();
  /** Names reported as requested-but-missing (reported once until served). */
  private readonly reportedMissing = new Set<string>();
  private generation = 0;
  private socket: string | undefined;

  constructor(private readonly opts: SdsServerOptions) {
    this.grpcServer.addService(
      { StreamSecrets: rawBidi(SDS_METHODS.StreamSecrets, "streamSecrets"), DeltaSecrets: rawBidi(SDS_METHODS.DeltaSecrets, "deltaSecrets") },
      {
        StreamSecrets: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => this.serve(new SotwSdsStream(this, call, "sotw"), call),
        DeltaSecrets: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => this.serve(new DeltaSdsStream(this, call, "delta"), call),
      },
    );
  }

  /**
   * Listens on a unix socket that only this user can reach: the directory is made 0700 and the socket 0600 (the
   * secrets include private keys). A stale socket from a crash is replaced.
   */
  async listen(socketPath: string): Promise<void> {
    const dir = path.dirname(socketPath);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    await fs.chmod(dir, 0o700); // whoever created it, and whatever the umask
    await fs.rm(socketPath, { force: true });
    await new Promise<number>((resolve, reject) =>
      this.grpcServer.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(new Error(`SDS server: cannot listen on ${socketPath}: ${err.message}`)) : resolve(port),
      ),
    );
    await fs.chmod(socketPath, 0o600);
    this.socket = socketPath;
  }

  async close(): Promise<void> {
    for (const s of [...this.streams]) this.end(s, grpc.status.UNAVAILABLE, "vmpilot-agent is shutting down");
    await new Promise<void>((resolve) => this.grpcServer.tryShutdown(() => resolve()));
    if (this.socket) await fs.rm(this.socket, { force: true });
  }

  /**
   * Replaces the served secrets (proto3 JSON Secrets, each with its name). Streams get the secrets they asked
   * for whose content changed; secrets no longer given are no longer served (see the header on removal).
   */
  setSecrets(secrets: Iterable<Record<string, unknown>>): void {
    const next = new Map<string, WireResource>();
    for (const s of secrets) {
      const res = encodeSecret(s);
      const prev = this.secrets.get(res.name);
      // Keep the same object for unchanged content: the version is what streams compare.
      next.set(res.name, prev && prev.version === res.version ? prev : res);
    }
    const changed = next.size !== this.secrets.size || [...next].some(([name, r]) => this.secrets.get(name) !== r);
    if (!changed) return;
    this.secrets = next;
    this.generation++;
    for (const name of next.keys()) this.reportedMissing.delete(name);
    for (const s of this.streams) s.flush();
  }

  secret(name: string): WireResource | undefined {
    return this.secrets.get(name);
  }

  /** The version_info of responses: the generation of the secret set. */
  version(): string {
    return String(this.generation);
  }

  status(): SdsStatus {
    const requested = new Set<string>();
    for (const s of this.streams) for (const n of s.wanted) requested.add(n);
    return {
      served: [...this.secrets.keys()].sort(),
      missing: [...requested].filter((n) => !this.secrets.has(n)).sort(),
      streams: [...this.streams].map((s) => s.status()),
    };
  }

  /** Called by streams with the names a request asked for: a name we do not have is worth one log line. */
  requested(names: Iterable<string>): void {
    for (const name of names) {
      if (this.secrets.has(name) || this.reportedMissing.has(name)) continue;
      this.reportedMissing.add(name);
      this.opts.logger.warn(`SDS: Envoy asks for secret ${JSON.stringify(name)}, which is not served${this.opts.missingHint ? ` (${this.opts.missingHint(name)})` : ""}; the listener using it waits until it is`);
    }
  }

  nacked(names: string[], message: string): void {
    this.opts.logger.warn(`SDS: Envoy rejected secret(s) ${names.join(", ")}: ${message}; not re-sent until their content changes`);
  }

  private serve(stream: SdsStream, call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
    this.streams.add(stream);
    call.on("data", (buf: Buffer) => {
      if (!this.streams.has(stream)) return;
      try {
        stream.onRequest(buf);
      } catch (e) {
        this.opts.logger.warn(`SDS: bad request, stream closed: ${(e as Error).message}`);
        this.end(stream, grpc.status.INVALID_ARGUMENT, (e as Error).message);
      }
    });
    const gone = () => this.streams.delete(stream);
    call.on("end", () => {
      if (gone()) call.end();
    });
    call.on("cancelled", gone);
    call.on("error", gone);
  }

  private end(stream: SdsStream, code: grpc.status, details: string): void {
    if (!this.streams.delete(stream)) return;
    // grpc-js sends an emitted error as the call's status.
    stream.call.emit("error", { code, details });
  }
}
