// TLS credentials of the secure port (mTLS xDS + CA on one gRPC server, 15012 by default).
//
// Chicken and egg: a brand-new workload has no certificate and must reach CreateCertificate with only a token,
// so the handshake REQUESTS a client certificate and verifies any it gets against the mesh root, but does not
// REQUIRE one (Node: requestCert=true, rejectUnauthorized=false). The handlers then decide: ADS streams refuse
// a call without a verified certificate matching the node (identity.ts `checkStreamIdentity`), CreateCertificate
// takes a certificate or a token. A certificate from another CA is simply not "verified": grpc-js then exposes
// no peer certificate, so it can never be mistaken for an identity.
//
// grpc-js's `createSsl(root, pairs, checkClientCertificate)` cannot express "request but don't require" (false
// does not even ask for a certificate, true rejects the handshake without one); its certificate-provider
// credentials can, and they also let the serving certificate, issued by the mesh CA like any other, rotate
// without rebinding the port.
import os from "node:os";
import * as grpc from "@grpc/grpc-js";
import { createLogger, type Logger } from "@vmpilot/registry/logger";
import type { CertificateAuthority, IssuedCertificate } from "./authority.js";

type CertificateProvider = grpc.experimental.CertificateProvider;
type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;

export interface SecureCredentialsOptions {
  authority: CertificateAuthority;
  /** DNS SANs besides the SPIFFE id. Default `defaultServingNames().dnsNames`. */
  dnsNames?: readonly string[];
  /** IP SANs. Default loopback. */
  ipAddresses?: readonly string[];
  /** Serving certificate lifetime (renewed at half of it). Default: the CA's leaf lifetime. */
  ttlMs?: number;
  logger?: Logger;
}

/** SANs that make the port reachable by its usual names: the Kubernetes-style service name, the host, loopback. */
export function defaultServingNames(): { dnsNames: string[]; ipAddresses: string[] } {
  return {
    dnsNames: ["vmpilot.vmpilot-system.svc", "localhost", os.hostname()],
    ipAddresses: ["127.0.0.1", "::1"],
  };
}

const RETRY_MS = 10_000;

/** Serving identity + trust bundle for the secure port, rotating its own certificate before it expires. */
export class SecurePortCredentials implements CertificateProvider {
  readonly credentials: grpc.ServerCredentials;
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly opts: SecureCredentialsOptions,
    private serving: IssuedCertificate & { keyPem: string },
    private readonly log: Logger,
  ) {
    // grpc-js names this function's parameters (ca, identity) but hands them to the constructor as
    // (identity, ca); passing the same provider in both places makes the order irrelevant.
    this.credentials = grpc.experimental.createCertificateProviderServerCredentials(this, this, false);
    this.scheduleRenewal();
  }

  static async create(opts: SecureCredentialsOptions): Promise<SecurePortCredentials> {
    const log = opts.logger ?? createLogger("secure-port");
    return new SecurePortCredentials(opts, await issue(opts), log);
  }

  /** The serving certificate currently presented (key, chain, validity). */
  get current(): Readonly<IssuedCertificate & { keyPem: string }> {
    return this.serving;
  }

  /** Stops the renewal timer. The credentials keep the last certificate until the server closes. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Replaces the serving certificate now (also what the timer does at half its lifetime). */
  async renew(): Promise<void> {
    this.serving = await issue(this.opts);
    this.log.info("renewed the secure port's serving certificate", {
      serial: this.serving.serialNumber,
      notAfter: this.serving.notAfter.toISOString(),
    });
    const update = this.identityUpdate();
    for (const l of this.identityListeners) l(update);
    this.scheduleRenewal();
  }

  private scheduleRenewal(): void {
    if (this.closed) return;
    const lifetime = this.serving.notAfter.getTime() - this.serving.notBefore.getTime();
    const renewAt = this.serving.notBefore.getTime() + lifetime / 2;
    this.timer = setTimeout(() => {
      this.renew().catch((e: unknown) => {
        this.log.error("renewing the serving certificate failed; retrying", { error: (e as Error).message });
        if (!this.closed) this.timer = setTimeout(() => void this.renew().catch(() => undefined), RETRY_MS).unref();
      });
    }, Math.max(0, renewAt - Date.now()));
    this.timer.unref();
  }

  private identityUpdate() {
    // The chain the server presents: leaf and intermediates; peers have the root already.
    const chain = this.serving.chainPem.slice(0, -1).join("");
    return { certificate: Buffer.from(chain), privateKey: Buffer.from(this.serving.keyPem) };
  }

  // CertificateProvider: grpc-js registers its listeners when a server binds with these credentials, but adds
  // the watcher that applies an update to the listening socket only after registering them, so an answer given
  // synchronously would be lost. A microtask runs after that and still before the socket can accept anything.
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    queueMicrotask(() => {
      if (this.caListeners.has(listener)) listener({ caCertificate: Buffer.from(this.opts.authority.rootCertPem) });
    });
  }
  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    queueMicrotask(() => {
      if (this.identityListeners.has(listener)) listener(this.identityUpdate());
    });
  }
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }
}

async function issue(opts: SecureCredentialsOptions) {
  const defaults = defaultServingNames();
  return opts.authority.issueServingCertificate({
    dnsNames: opts.dnsNames ?? defaults.dnsNames,
    ipAddresses: opts.ipAddresses ?? defaults.ipAddresses,
    ...(opts.ttlMs !== undefined ? { ttlMs: opts.ttlMs } : {}),
  });
}
