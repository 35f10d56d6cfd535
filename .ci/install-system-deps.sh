#!/usr/bin/env bash
# Debian packages that CI's checks need beyond Node (package: what uses it):
#   systemd: systemd-analyze verify on systemd/*.service (test/static)
#   ShellCheck (Debian package shellcheck): lints the Vagrant provisioning scripts (test/static)
#   ruby: ruby -c on the Vagrantfile (test/static)
#   iproute2: ip netns / veth for the multi-host end-to-end testbed (test/e2e)
#   dnsutils: dig, for DNS checks in the testbed
#   iptables: capture rules applied for real inside the testbed's namespaces
#
# Idempotent and quiet: installs only what is missing (no upgrades), runs `apt-get update` at most once and
# only when something is missing, so a machine that already has everything pays one dpkg-query. Only acts as
# root; otherwise it says what is missing and leaves it to the tests to skip (or, with CI set, to fail).
set -euo pipefail

packages=(systemd shellcheck ruby iproute2 dnsutils iptables)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-system-deps: all present (${packages[*]})"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-system-deps: not root, not installing: ${missing[*]} (tests that need them skip, or fail with CI set)" >&2
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# apt's chatter goes to a log that is shown only when something fails.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-system-deps: FAILED to install ${missing[*]}" >&2
  exit 1
fi
echo "install-system-deps: installed ${missing[*]} in $(($(date +%s) - start)) s"
