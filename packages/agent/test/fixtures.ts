// Shared agent configs for the unit tests.
import { parseAgentConfig, type AgentConfig } from "../src/config.js";

export const BASE_YAML = `# a VM running the reviews service
name: reviews-vm-1
namespace: shop
serviceAccount: reviews
labels:
  app: reviews
  version: v1
address: 10.0.0.5
ports:
  - name: http
    port: 9080
    protocol: HTTP
    targetPort: 8080
  - name: grpc
    port: 9090
    protocol: GRPC
controlPlane:
  address: cp.mesh.internal:15012
  tokenFile: /etc/vmpilot/token
  rootCertFile: /etc/vmpilot/root-cert.pem
output:
  dir: /var/lib/vmpilot/agent
`;

export function config(extra = "", env: NodeJS.ProcessEnv = {}): AgentConfig {
  return parseAgentConfig(BASE_YAML + extra, "agent.yaml", env);
}
