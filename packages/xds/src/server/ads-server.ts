// The ADS service implementation: accepts SotW and delta streams, keeps the view from each stream's first
// request, authorizes it (the secure port checks the peer certificate against it), and fans pushes out to
// every open stream. One AdsServer can be added to several grpc.Servers (plaintext and mTLS ports).
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "@vmpilot/registry/logger";
import { type ProxyView, proxyViewFromNode, ProxyViewError } from "../proxy-view.js";
import { adsServiceDefinition, decodeDeltaRequest, sotwRequestDecoder } from "./ads.js";
import { DeltaStream } from "./delta.js";
import type { ResourceSource } from "./resources.js";
import { SendBudget } from "./send-budget.js";
import { SotwStream } from "./sotw.js";
import type { StreamObserver, StreamStatus, XdsStream } from "./stream.js";

type AdsCall = grpc.ServerDuplexStream<Buffer, Buffer>;

/**
 * 16 MiB of responses waiting for the transport is eight sidecars' full config in a 1,000-service mesh: far more
 * than a link's bandwidth-delay product, so it does not slow a storm down. A larger cap only keeps grpc-js's framed
 * copy of each response alive longer: at 64 MiB those copies outlived the young generation and every 64 MB of them
 * forced a full mark-compact (48 in a 1,000-sidecar connect storm against 22-26 at 8-16 MiB; server CPU 11.3 s
 * against 8.8-9.5 s, RSS 378 MB against 307-328 MB). Clients that stop reading hold their share until they go.
 */
const DEFAULT_SEND_BUDGET = 16 * 2 ** 20;

/** Why a stream is refused: a message (PERMISSION_DENIED) or an explicit status. */
export type StreamRefusal = string | { code: grpc.status; message: string };

/**
 * Runs once per stream, after its first request and before any response. `undefined` admits the stream.
 * The secure port uses it to require that the client certificate's SPIFFE id matches the node metadata.
 */
export type AuthorizeStream = (call: AdsCall, view: ProxyView) => StreamRefusal | undefined | Promise<StreamRefusal | undefined>;

export interface AdsServerOptions {
  source: ResourceSource;
  /** Default authorization for every stream (per-port hooks given to `implementation()` run after it). */
  authorizeStream?: AuthorizeStream;
  observer?: StreamObserver & {
    connected?(stream: XdsStream): void;
    disconnected?(stream: XdsStream): void;
  };
  log?: Logger;
  /** Cap on response bytes written but not yet taken by the transport, across streams (default 16 MiB: see DEFAULT_SEND_BUDGET). */
  sendBudgetBytes?: number;
}

export class AdsServer {
  private readonly streams = new Set<XdsStream>();
  private readonly budget: SendBudget;
  private readonly calls = new Map<XdsStream, AdsCall>();
  private draining = false;

  constructor(private readonly opts: AdsServerOptions) {
    this.budget = new SendBudget(opts.sendBudgetBytes ?? DEFAULT_SEND_BUDGET);
    const observer = opts.observer ?? {};
    this.opts = {
      ...opts,
      observer: {
        ...observer,
        sourceFailed: (s, typeUrl, err) => {
          opts.log?.error("generating resources failed; the proxy keeps its current config", { proxy: s.view.id, type: typeUrl, error: err });
          observer.sourceFailed?.(s, typeUrl, err);
        },
      },
    };
  }

  readonly definition: grpc.ServiceDefinition = adsServiceDefinition();

  /** The handlers to add to a grpc.Server; `authorize` adds a per-port check (e.g. the mTLS port's). */
  implementation(authorize?: AuthorizeStream): grpc.UntypedServiceImplementation {
    return {
      StreamAggregatedResources: (call: AdsCall) => this.serve(call, "sotw", authorize),
      DeltaAggregatedResources: (call: AdsCall) => this.serve(call, "delta", authorize),
    };
  }

  /** Re-evaluates every stream against the source (after the cache was updated). */
  push(triggeredAt = Date.now()): void {
    for (const s of this.streams) {
      try {
        s.push(triggeredAt);
      } catch (err) {
        this.fail(s, grpc.status.INTERNAL, `push failed: ${(err as Error).message}`);
      }
    }
  }

  status(): StreamStatus[] {
    return [...this.streams].map((s) => s.status()).sort((a, b) => (a.proxyId === b.proxyId ? a.connectedAt - b.connectedAt : a.proxyId < b.proxyId ? -1 : 1));
  }

  get connections(): ReadonlySet<XdsStream> {
    return this.streams;
  }

  /**
   * Ends every stream with OK so proxies reconnect (to this server after a restart, or to another replica),
   * and refuses new ones. grpc.Server.tryShutdown then completes once the calls are gone.
   */
  drain(): void {
    this.draining = true;
    for (const [s, call] of this.calls) {
      s.close();
      if (!call.writableEnded) call.end();
    }
  }

  private serve(call: AdsCall, protocol: "sotw" | "delta", portAuthorize: AuthorizeStream | undefined): void {
    const log = this.opts.log;
    if (this.draining) {
      call.emit("error", { code: grpc.status.UNAVAILABLE, details: "control plane is shutting down" });
      return;
    }
    const decode = protocol === "sotw" ? sotwRequestDecoder() : decodeDeltaRequest;
    let stream: XdsStream | undefined;
    let admitting: Promise<void> | undefined;
    const queue: Buffer[] = [];
    let ended = false;

    const handleRequest = (buf: Buffer): void => {
      if (ended || !stream) return;
      let req;
      try {
        req = decode(buf);
      } catch (err) {
        this.fail(stream, grpc.status.INVALID_ARGUMENT, `cannot decode request: ${(err as Error).message}`);
        return;
      }
      try {
        stream.handle(req);
      } catch (err) {
        this.fail(stream, grpc.status.INVALID_ARGUMENT, (err as Error).message);
      }
    };

    const admit = async (buf: Buffer): Promise<void> => {
      let view: ProxyView;
      try {
        view = proxyViewFromNode(decode(buf).node);
      } catch (err) {
        const message = err instanceof ProxyViewError ? err.message : `cannot decode request: ${(err as Error).message}`;
        ended = true;
        call.emit("error", { code: grpc.status.INVALID_ARGUMENT, details: message });
        return;
      }
      for (const hook of [this.opts.authorizeStream, portAuthorize]) {
        if (!hook) continue;
        let refusal: StreamRefusal | undefined;
        try {
          refusal = await hook(call, view);
        } catch (err) {
          refusal = { code: grpc.status.INTERNAL, message: `authorization failed: ${(err as Error).message}` };
        }
        if (refusal !== undefined) {
          const { code, message } = typeof refusal === "string" ? { code: grpc.status.PERMISSION_DENIED, message: refusal } : refusal;
          log?.warn("xDS stream refused", { proxy: view.id, peer: call.getPeer(), reason: message });
          ended = true;
          call.emit("error", { code, details: message });
          return;
        }
      }
      if (ended) return; // the client went away while we were deciding
      if (this.draining) {
        ended = true;
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "control plane is shutting down" });
        return;
      }
      const Stream = protocol === "sotw" ? SotwStream : DeltaStream;
      const s = new Stream(protocol, view, call.getPeer(), this.opts.source, (m) => write(m), this.opts.observer);
      s.sendBudget = this.budget;
      stream = s;
      this.streams.add(s);
      this.calls.set(s, call);
      this.opts.observer?.connected?.(s);
      log?.info("xDS stream connected", { proxy: view.id, kind: view.kind, namespace: view.namespace, protocol, peer: s.peer, stream: s.streamId });
      handleRequest(buf);
      for (const b of queue.splice(0)) handleRequest(b);
    };

    call.on("data", (buf: Buffer) => {
      if (ended) return;
      if (stream) return handleRequest(buf);
      if (admitting) {
        queue.push(buf);
        return;
      }
      admitting = admit(buf).catch((err: unknown) => {
        log?.error("admitting an xDS stream failed", { error: err });
        ended = true;
        call.emit("error", { code: grpc.status.INTERNAL, details: `cannot serve this stream: ${(err as Error).message}` });
      });
    });
    // Bytes of this call still counted against the send budget: released when the transport takes them, or
    // all at once when the call ends (a cancelled stream may never run its write callbacks).
    const unreleased = new Set<() => void>();
    const write = (m: Buffer): void => {
      const release = this.budget.take(m.length);
      unreleased.add(release);
      call.write(m, () => {
        unreleased.delete(release);
        release();
      });
    };
    const releaseAll = (): void => {
      const rs = [...unreleased];
      unreleased.clear();
      for (const r of rs) r();
    };
    call.on("close", releaseAll);
    const finish = (why: string): void => {
      if (ended && !stream) return;
      ended = true;
      if (!stream) return;
      const s = stream;
      if (!this.streams.delete(s)) return;
      this.calls.delete(s);
      s.close();
      this.opts.observer?.disconnected?.(s);
      log?.info("xDS stream closed", { proxy: s.view.id, stream: s.streamId, why });
    };
    call.on("end", () => {
      finish("client ended the stream");
      if (!call.writableEnded) call.end();
    });
    call.on("cancelled", () => finish("cancelled"));
    call.on("error", (err) => finish(`error: ${err.message}`));
    call.on("close", () => finish("closed"));
  }

  private fail(s: XdsStream, code: grpc.status, details: string): void {
    const call = this.calls.get(s);
    this.opts.log?.warn("ending xDS stream", { proxy: s.view.id, stream: s.streamId, code: grpc.status[code], details });
    this.streams.delete(s);
    this.calls.delete(s);
    s.close();
    this.opts.observer?.disconnected?.(s);
    call?.emit("error", { code, details });
  }
}
