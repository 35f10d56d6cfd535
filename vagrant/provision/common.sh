#!/usr/bin/env bash
# Every VM: base packages and /etc/hosts entries for the testbed's names.
# Usage: common.sh IP=NAME,IP=NAME,...
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

hosts_arg=${1:?usage: common.sh IP=NAME,...}

# On a re-provision of a workload VM the capture rules may be active, and under REGISTRY_ONLY they would
# black-hole apt and the downloads below. Stopping the capture unit removes them and stops the agent, which
# requires it; workload.sh starts both again.
if systemctl is-active --quiet vmpilot-agent-iptables 2>/dev/null || systemctl is-active --quiet vmpilot-agent 2>/dev/null; then
  log "stopping vmpilot-agent and its capture rules while provisioning"
  systemctl stop vmpilot-agent-iptables vmpilot-agent
fi

log "base packages"
apt-get update -qq
apt_install ca-certificates curl gnupg git jq rsync python3 dnsutils lsb-release

entries=""
IFS=, read -r -a pairs <<<"$hosts_arg"
for pair in "${pairs[@]}"; do
  entries+="${pair%%=*} ${pair#*=}"$'\n'
done
managed_block /etc/hosts vmpilot-testbed "${entries%$'\n'}"
log "/etc/hosts: ${hosts_arg}"
