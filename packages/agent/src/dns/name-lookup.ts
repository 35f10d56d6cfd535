// The agent's in-memory view of the control plane's name table: exact names (and their alt hosts) plus
// wildcard entries, matched the way Istio's agent matches them.
import { isIP } from "node:net";
import type { NameTable } from "@vmpilot/xds/generators/nametable";

export interface NameAnswer {
  /** The table key that matched (`*.example.com` for a wildcard match). */
  host: string;
  v4: readonly string[];
  v6: readonly string[];
}

/** DNS names compare case-insensitively; a trailing dot (fully qualified form) is the same name. */
export function canonicalName(name: string): string {
  return name.toLowerCase().replace(/\.+$/, "");
}

export class NameLookup {
  private readonly exact = new Map<string, NameAnswer>();
  private readonly wildcard = new Map<string, NameAnswer>();

  constructor(table: NameTable = { table: {} }) {
    for (const [key, info] of Object.entries(table.table)) {
      const host = canonicalName(key);
      const answer: NameAnswer = {
        host,
        v4: info.ips.filter((ip) => isIP(ip) === 4),
        v6: info.ips.filter((ip) => isIP(ip) === 6),
      };
      if (answer.v4.length === 0 && answer.v6.length === 0) continue;
      if (host.startsWith("*.")) this.wildcard.set(host.slice(2), answer);
      else {
        this.exact.set(host, answer);
        for (const alt of info.alt_hosts) if (!this.exact.has(canonicalName(alt))) this.exact.set(canonicalName(alt), answer);
      }
    }
  }

  get size(): number {
    return this.exact.size + this.wildcard.size;
  }

  /**
   * An exact entry, else the most specific wildcard: for `a.b.example.com`, `*.b.example.com` before
   * `*.example.com`. A wildcard never matches its own suffix (`*.example.com` does not answer `example.com`).
   */
  resolve(name: string): NameAnswer | undefined {
    const host = canonicalName(name);
    const exact = this.exact.get(host);
    if (exact) return exact;
    if (this.wildcard.size === 0) return undefined;
    for (let dot = host.indexOf("."); dot >= 0; dot = host.indexOf(".", dot + 1)) {
      const hit = this.wildcard.get(host.slice(dot + 1));
      if (hit) return hit;
    }
    return undefined;
  }
}
