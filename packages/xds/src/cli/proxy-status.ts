// `vmpilot proxy-status [--http-addr HOST:PORT] [--output table|json]`: every connected proxy and, per xDS
// type, whether it runs what we sent (like `istioctl proxy-status`). Reads the server's /debug/syncz.
import { Command, Option } from "commander";
import { fetchRevisions, formatRevisionLines } from "../revision.js";
import { DEFAULT_HTTP_ADDR } from "../server/config.js";

/** One entry of /debug/syncz as this command reads it. */
export interface SynczEntry {
  proxyId: string;
  kind: string;
  namespace: string;
  protocol: string;
  streamId: string;
  connectedAt?: string;
  types: Record<string, { sent?: { nonce: string; version: string }; acked?: { nonce: string; version: string }; pending: boolean; lastNack?: { nonce: string; message: string } }>;
}

export type SyncState = "SYNCED" | "NOT SENT" | "STALE" | "NACKED";

const TYPES = ["CDS", "LDS", "EDS", "RDS"] as const;

/**
 * SYNCED: the latest response was ACKed. NACKED: it was rejected. STALE: sent, not answered yet.
 * NOT SENT: subscribed (or not subscribed at all) and nothing sent.
 */
export function syncState(t: SynczEntry["types"][string] | undefined): SyncState {
  if (!t?.sent) return "NOT SENT";
  if (t.lastNack && t.lastNack.nonce === t.sent.nonce) return "NACKED";
  if (t.acked && t.acked.nonce === t.sent.nonce) return "SYNCED";
  return "STALE";
}

/** `42s`, `7m`, `3h`, `2d`: how long a stream has been connected. */
export function age(fromIso: string | undefined, now = Date.now()): string {
  if (!fromIso) return "";
  const s = Math.max(0, Math.floor((now - Date.parse(fromIso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** One row per stream; "-" for a type the proxy never asked for. */
export function formatTable(entries: SynczEntry[], now = Date.now()): string {
  const header = ["NAME", "KIND", "NAMESPACE", "PROTOCOL", ...TYPES, "AGE"];
  const rows = entries.map((e) => [e.proxyId, e.kind, e.namespace, e.protocol, ...TYPES.map((t) => (e.types[t] ? syncState(e.types[t]) : "-")), age(e.connectedAt, now)]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("   ").trimEnd()).join("\n") + "\n";
}

export async function fetchSyncz(httpAddr: string): Promise<SynczEntry[]> {
  const res = await fetch(`http://${httpAddr}/debug/syncz`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`GET /debug/syncz: HTTP ${res.status}`);
  return (await res.json()) as SynczEntry[];
}

export function register(program: Command): void {
  program
    .command("proxy-status")
    .description("connected proxies and, per xDS type, whether they run what was sent (SYNCED, STALE, NACKED, NOT SENT)")
    .option("--http-addr <host:port>", "the server's HTTP address", DEFAULT_HTTP_ADDR)
    .addOption(new Option("-o, --output <format>", "output format").choices(["table", "json"]).default("table"))
    .action(async (opts: { httpAddr: string; output: "table" | "json" }) => {
      try {
        const entries = await fetchSyncz(opts.httpAddr);
        // Which commit of the config repository the proxies below are running (the answer after a merge).
        if (opts.output === "table") for (const line of formatRevisionLines(await fetchRevisions(opts.httpAddr))) process.stdout.write(`${line}\n`);
        if (opts.output === "json") process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
        else if (entries.length === 0) process.stdout.write("no proxies connected\n");
        else process.stdout.write(formatTable(entries));
        // NACKs deserve a closer look: print their messages under the table.
        if (opts.output === "table") {
          for (const e of entries) {
            for (const [type, t] of Object.entries(e.types)) {
              if (syncState(t) === "NACKED") process.stdout.write(`\n${e.proxyId} rejected ${type}: ${t.lastNack!.message}\n`);
            }
          }
        }
      } catch (err) {
        process.stderr.write(`vmpilot proxy-status: cannot read ${opts.httpAddr}: ${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
