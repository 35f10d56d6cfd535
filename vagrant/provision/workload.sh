#!/usr/bin/env bash
# A workload VM: the sample app (the "details" service, plain HTTP on :8080) registered in Consul, Envoy,
# and vmpilot-agent with its capture rules (systemd/vmpilot-agent*.service).
# Usage: workload.sh NAME IP CP_IP CONSUL_IP
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

name=${1:?usage: workload.sh NAME IP CP_IP CONSUL_IP}
ip=${2:?IP}
cp_ip=${3:?control plane IP}
consul_ip=${4:?consul IP}
cfg=/vmpilot/vagrant/config
# Envoy release used when the apt repository has no package for this machine.
envoy_version=1.32.3

apt_install iptables python3

# ---- Envoy ----
if ! command -v envoy >/dev/null; then
  log "Envoy"
  if ! { apt_repo envoy https://apt.envoyproxy.io/signing.key "https://apt.envoyproxy.io $(lsb_release -cs) main" &&
    apt_install envoy; }; then
    log "no Envoy package from apt.envoyproxy.io; using the v${envoy_version} release binary"
    # A half-added repository would break every later `apt-get update`.
    rm -f /etc/apt/sources.list.d/envoy.list /etc/apt/keyrings/envoy.gpg
    case $(uname -m) in
      x86_64) arch=x86_64 ;;
      aarch64) arch=aarch_64 ;;
      *) die "no Envoy release binary for $(uname -m)" ;;
    esac
    curl -fsSL --retry 5 -o /usr/local/bin/envoy.tmp \
      "https://github.com/envoyproxy/envoy/releases/download/v${envoy_version}/envoy-${envoy_version}-linux-${arch}"
    chmod 0755 /usr/local/bin/envoy.tmp
    mv /usr/local/bin/envoy.tmp /usr/local/bin/envoy
  fi
fi
envoy --version 2>&1 | sed -n 1p

# ---- the sample app: a static page naming this VM, so responses show where a request landed ----
install -d -m 0755 /srv/details
printf 'details served by %s (%s)\n' "$name" "$ip" >/srv/details/index.html
install_unit "$cfg"/systemd/details-app.service
systemctl enable --quiet details-app
systemctl restart details-app
wait_for "details app on :8080" 30 curl -fsS http://127.0.0.1:8080/ || die "details-app did not start"

cat >/etc/consul.d/details.hcl <<HCL
service {
  name = "details"
  port = 8080
  tags = ["instance-id|${name}"]
  meta = {
    protocol = "http"
  }
  check {
    id = "details-http"
    http = "http://127.0.0.1:8080/"
    interval = "10s"
    timeout = "2s"
  }
}
HCL
chown consul:consul /etc/consul.d/details.hcl
consul reload >/dev/null

# ---- identity material from the control plane (see control-plane.sh: testbed-only enrollment) ----
wait_for "enrollment files on ${cp_ip}" 900 curl -fsS -o /dev/null "http://${cp_ip}:8088/${name}.token" ||
  die "no enrollment files at http://${cp_ip}:8088/ (is the cp VM up and provisioned?)"
ensure_user vmpilot-agent /var/lib/vmpilot/agent 1337
curl -fsS -o /etc/vmpilot/root-cert.pem "http://${cp_ip}:8088/root-cert.pem"
chmod 0644 /etc/vmpilot/root-cert.pem
curl -fsS -o /etc/vmpilot/bootstrap-token.tmp "http://${cp_ip}:8088/${name}.token"
install -m 0640 -o root -g vmpilot-agent /etc/vmpilot/bootstrap-token.tmp /etc/vmpilot/bootstrap-token
rm -f /etc/vmpilot/bootstrap-token.tmp

# ---- the agent ----
install -m 0640 -o root -g vmpilot-agent "$cfg/agent/${name}.yaml" /etc/vmpilot/agent.yaml
install -m 0644 /vmpilot/systemd/vmpilot-agent.env /etc/vmpilot/vmpilot-agent.env
grep -q "$consul_ip" /etc/vmpilot/agent.yaml || die "agent.yaml must exempt the Consul server ($consul_ip) from capture"
log "capture rules this agent will install:"
vmpilot-agent iptables --config /etc/vmpilot/agent.yaml --dry-run

# Names of mesh services, on the virtual IPs their ServiceEntries declare (no DNS proxy in this testbed):
# the connection only has to leave the app; Envoy routes it by Host header or SNI, not by this address.
managed_block /etc/hosts vmpilot-mesh-services "240.240.0.10 details.shop.internal"

# RequiredBy=vmpilot-agent.service: enabling the capture unit makes the agent require it.
systemctl enable --quiet vmpilot-agent-iptables
systemctl enable --quiet vmpilot-agent
# Restarting the capture unit re-applies the rules for this agent.yaml and restarts the agent with it.
systemctl restart vmpilot-agent-iptables vmpilot-agent
# Ready = certificate obtained, Envoy running and configured, the app's probe passing.
wait_for "agent ready (127.0.0.1:15020/healthz/ready)" 300 curl -fsS http://127.0.0.1:15020/healthz/ready || {
  journalctl -u vmpilot-agent -u vmpilot-agent-iptables -n 80 --no-pager >&2
  curl -sS http://127.0.0.1:15020/status >&2 || true
  die "the agent did not become ready"
}
log "workload ${name} (${ip}) joined the mesh via ${cp_ip}"
