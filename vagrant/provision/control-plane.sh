#!/usr/bin/env bash
# The control plane VM: the GitOps repository and the checkout vmpilot serves, the server itself
# (systemd/vmpilot.service), and the testbed's enrollment files for the workload VMs.
# Usage: control-plane.sh CP_IP CONSUL_IP WORKLOAD,WORKLOAD...
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

cp_ip=${1:?usage: control-plane.sh CP_IP CONSUL_IP WORKLOADS}
consul_ip=${2:?consul IP}
workloads=${3:?workload names, comma-separated}
cfg=/vmpilot/vagrant/config

ensure_user vmpilot /var/lib/vmpilot/server
ensure_user vmpilot-gitops /srv/vmpilot

# ---- GitOps: a bare repository people push to, and a checkout that a timer fast-forwards ----
# Created once from vagrant/config/mesh; later provisioning never overwrites what was pushed since.
if [[ ! -d /srv/git/mesh.git ]]; then
  log "GitOps repository /srv/git/mesh.git from $cfg/mesh"
  install -d -m 0755 -o vagrant -g vagrant /srv/git
  seed=$(mktemp -d)
  cp -r "$cfg/mesh/." "$seed/"
  git -C "$seed" init -q -b main
  git -C "$seed" add -A
  git -C "$seed" -c user.name=vagrant -c user.email=vagrant@cp commit -q -m "testbed: initial mesh config"
  git clone -q --bare "$seed" /srv/git/mesh.git
  rm -rf "$seed"
  chown -R vagrant:vagrant /srv/git/mesh.git
fi
# The checkout's owner (vmpilot-gitops) fetches from a repository owned by vagrant.
git config --system --get-all safe.directory | grep -qx /srv/git/mesh.git ||
  git config --system --add safe.directory /srv/git/mesh.git

install -d -m 0755 -o vmpilot-gitops -g vmpilot-gitops /srv/vmpilot
if [[ ! -d /srv/vmpilot/mesh/.git ]]; then
  runuser -u vmpilot-gitops -- git clone -q /srv/git/mesh.git /srv/vmpilot/mesh
fi
# The walkthrough's working copy, in the vagrant user's home.
if [[ ! -d /home/vagrant/mesh/.git ]]; then
  runuser -u vagrant -- git clone -q /srv/git/mesh.git /home/vagrant/mesh
  runuser -u vagrant -- git -C /home/vagrant/mesh config user.name vagrant
  runuser -u vagrant -- git -C /home/vagrant/mesh config user.email vagrant@cp
fi
install_unit "$cfg"/systemd/vmpilot-gitops-pull.service "$cfg"/systemd/vmpilot-gitops-pull.timer
systemctl enable --quiet --now vmpilot-gitops-pull.timer

# ---- the server ----
# Kept when it exists: the walkthrough edits it (outboundTrafficPolicy), and re-provisioning should not undo that.
if [[ ! -f /etc/vmpilot/vmpilot.yaml ]]; then
  install -m 0640 -o root -g vmpilot "$cfg/server/vmpilot.yaml" /etc/vmpilot/vmpilot.yaml
fi
grep -q "$consul_ip" /etc/vmpilot/vmpilot.yaml || log "note: /etc/vmpilot/vmpilot.yaml does not mention Consul at $consul_ip"
install -m 0644 /vmpilot/systemd/vmpilot.env /etc/vmpilot/vmpilot.env
vmpilot validate /srv/vmpilot/mesh || die "the GitOps checkout does not validate"

systemctl enable --quiet vmpilot
systemctl restart vmpilot
# Consul may still be coming up on its own VM (libvirt boots VMs in parallel): allow for it.
wait_for "vmpilot /ready" 600 curl -fsS http://127.0.0.1:15014/ready || {
  journalctl -u vmpilot -n 50 --no-pager >&2
  die "vmpilot did not become ready"
}

# ---- enrollment: what each workload VM needs before its agent can start ----
# TESTBED ONLY: the mesh root certificate and a bootstrap token per workload VM, served over plain HTTP on
# the host-only network so that VMs brought up in any order can fetch them. A real fleet hands tokens out
# through its provisioning channel (cloud-init user data, a secrets manager), never a web server.
install -d -m 0755 /srv/vmpilot-enroll
wait_for "CA root certificate" 60 test -s /var/lib/vmpilot/server/root-cert.pem || die "the server wrote no root-cert.pem"
install -m 0644 /var/lib/vmpilot/server/root-cert.pem /srv/vmpilot-enroll/root-cert.pem
IFS=, read -r -a names <<<"$workloads"
for name in "${names[@]}"; do
  # Every workload VM in this testbed runs the details app: namespace shop, service account details.
  runuser -u vmpilot -- vmpilot token create --config /etc/vmpilot/vmpilot.yaml \
    --namespace shop --service-account details --ttl 168h >"/srv/vmpilot-enroll/${name}.token.tmp"
  mv "/srv/vmpilot-enroll/${name}.token.tmp" "/srv/vmpilot-enroll/${name}.token"
  chmod 0644 "/srv/vmpilot-enroll/${name}.token"
done
install_unit "$cfg"/systemd/vmpilot-enroll.service
systemctl enable --quiet vmpilot-enroll
systemctl restart vmpilot-enroll
log "control plane ready: xDS+CA https://${cp_ip}:15012, enrollment http://${cp_ip}:8088/"
