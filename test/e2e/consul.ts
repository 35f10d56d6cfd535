// The Consul agent of the testbed's control-plane host: the Consul HTTP API simulator (test/consul-simulator.ts;
// no real Consul can be installed here) on that host's loopback, run with `ip netns exec` like every other process
// of the testbed. Workloads are registered through its HTTP API (PUT /v1/catalog/register), as the Consul agents
// on the VMs would. Prints {"event":"listening","address":URL} on stdout; SIGTERM stops it.
import { ConsulSimulator } from "../consul-simulator.js";

const sim = await ConsulSimulator.start({ host: "127.0.0.1", nodeName: "cp" });
process.stdout.write(JSON.stringify({ event: "listening", address: sim.address }) + "\n");
const stop = () => void sim.stop().finally(() => process.exit(0));
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
