// One spelling per address. A node may announce `2001:0db8:0:0::5` while its WorkloadEntry says `2001:DB8::5`;
// every place that matches a proxy to its own instances compares canonical forms, or the same workload is two
// strangers (no inbound config, or a server listener that outlives the entry it came from).
import { isIP } from "node:net";

/** An IP literal in canonical form (RFC 5952 for IPv6), or undefined when `address` is not one. */
export function canonicalIp(address: string): string | undefined {
  const family = isIP(address);
  if (family === 4) return address;
  // The WHATWG URL serializer writes IPv6 hosts in RFC 5952 form (lower case, longest zero run compressed).
  if (family === 6) return new URL(`http://[${address}]/`).hostname.slice(1, -1);
  return undefined;
}

/** `address` in canonical form when it is an IP literal, else unchanged (a hostname, a unix socket path). */
export function canonicalAddress(address: string): string {
  return canonicalIp(address) ?? address;
}
