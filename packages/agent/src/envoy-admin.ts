// Is Envoy ready to take traffic? The process running is not enough: Envoy must be LIVE (admin /ready) and have
// received its listeners and clusters from the control plane at least once, which is Istio's readiness rule
// (an update that was rejected still counts: Envoy then runs on what it had, and the NACK is visible upstream).
import fs from "node:fs/promises";
import http from "node:http";

export interface EnvoyReadiness {
  ready: boolean;
  reason?: string;
}

function get(base: string, p: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${base}${p}`, { timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on("error", reject);
  });
}

const CONFIG_STATS = /^(cluster_manager\.cds|listener_manager\.lds)\.update_(success|rejected)$/;

/** Sums of the CDS/LDS update counters from Envoy's plain-text /stats. */
export function configUpdates(statsText: string): { cds: number; lds: number } {
  const out = { cds: 0, lds: 0 };
  for (const line of statsText.split("\n")) {
    const [name, value] = line.split(": ");
    if (!name || value === undefined || !CONFIG_STATS.test(name)) continue;
    if (name.startsWith("cluster_manager.cds")) out.cds += Number(value) || 0;
    else out.lds += Number(value) || 0;
  }
  return out;
}

/** Asks Envoy's admin interface (address as written by --admin-address-path). */
export async function envoyReadiness(adminAddressFile: string, timeoutMs = 1000): Promise<EnvoyReadiness> {
  let address: string;
  try {
    address = (await fs.readFile(adminAddressFile, "utf8")).trim();
  } catch {
    return { ready: false, reason: "envoy has not opened its admin port yet" };
  }
  const base = `http://${address}`;
  try {
    const live = await get(base, "/ready", timeoutMs);
    if (live.status !== 200) return { ready: false, reason: `envoy is ${live.body.trim() || `not live (HTTP ${live.status})`}` };
    const stats = await get(base, "/stats?filter=" + encodeURIComponent(CONFIG_STATS.source), timeoutMs);
    const { cds, lds } = configUpdates(stats.body);
    if (cds === 0 || lds === 0) return { ready: false, reason: `envoy has not received its configuration yet (CDS updates ${cds}, LDS updates ${lds})` };
    return { ready: true };
  } catch (e) {
    return { ready: false, reason: `envoy admin ${address}: ${(e as Error).message}` };
  }
}
