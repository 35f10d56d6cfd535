// SPIFFE identities as Istio forms them: spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT.

export interface SpiffeIdentity {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

const SEGMENT = /^[A-Za-z0-9._-]+$/;

export function spiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/** Parses an Istio-form SPIFFE id; returns undefined for anything else (other paths, bad segments). */
export function parseSpiffeId(uri: string): SpiffeIdentity | undefined {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(uri);
  if (!m) return undefined;
  const [, trustDomain, namespace, serviceAccount] = m as unknown as [string, string, string, string];
  if (![trustDomain, namespace, serviceAccount].every((s) => SEGMENT.test(s))) return undefined;
  return { trustDomain, namespace, serviceAccount };
}
