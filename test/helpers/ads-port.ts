// Serves an AdsServer on a fresh loopback port (port 0: the OS picks).
import * as grpc from "@grpc/grpc-js";
import type { AdsServer } from "@vmpilot/xds/server/ads-server";

export async function startAds(ads: AdsServer, host = "127.0.0.1"): Promise<{ address: string; server: grpc.Server }> {
  const server = new grpc.Server();
  server.addService(ads.definition, ads.implementation());
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { address: `${host}:${port}`, server };
}
