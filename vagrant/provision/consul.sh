#!/usr/bin/env bash
# Consul from HashiCorp's apt repository: the server (with the UI) on the consul VM, a client agent on each
# workload VM (which registers the sample app).
# Usage: consul.sh server|client BIND_IP SERVER_IP
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

mode=${1:?usage: consul.sh server|client BIND_IP SERVER_IP}
bind_ip=${2:?bind IP}
server_ip=${3:?server IP}

apt_repo hashicorp https://apt.releases.hashicorp.com/gpg "https://apt.releases.hashicorp.com $(lsb_release -cs) main"
apt_install consul

case $mode in
  server)
    cat >/etc/consul.d/consul.hcl <<HCL
datacenter = "dc1"
data_dir = "/opt/consul"
bind_addr = "${bind_ip}"
# The HTTP API and UI on every address: the control plane reads the catalog from here.
client_addr = "0.0.0.0"
server = true
bootstrap_expect = 1
ui_config {
  enabled = true
}
HCL
    ;;
  client)
    cat >/etc/consul.d/consul.hcl <<HCL
datacenter = "dc1"
data_dir = "/opt/consul"
bind_addr = "${bind_ip}"
client_addr = "127.0.0.1"
retry_join = ["${server_ip}"]
HCL
    ;;
  *) die "mode must be server or client, not ${mode}" ;;
esac
chown consul:consul /etc/consul.d/consul.hcl
chmod 0640 /etc/consul.d/consul.hcl

systemctl enable --quiet consul
systemctl restart consul
if [[ $mode == server ]]; then
  wait_for "consul leader" 120 sh -c 'curl -fsS http://127.0.0.1:8500/v1/status/leader | grep -q :8300' ||
    die "consul elected no leader; see journalctl -u consul"
else
  wait_for "consul agent" 120 curl -fsS http://127.0.0.1:8500/v1/agent/self || die "consul agent did not start; see journalctl -u consul"
fi
