#!/usr/bin/env bash
# Installs vmpilot from the synced repository (/vmpilot) into /opt/vmpilot, the layout systemd/README.md
# describes: Node.js 20 (NodeSource's apt repository; Debian 12 ships 18), `npm ci` from the lockfile,
# `tsc -b`, dev dependencies pruned, `vmpilot` and `vmpilot-agent` wrappers on PATH, unit files installed
# (not enabled: control-plane.sh and workload.sh decide which run where).
# Usage: vmpilot-install.sh
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

src=/vmpilot
dest=/opt/vmpilot

[[ -f $src/package-lock.json ]] || die "$src is not the vmpilot repository (is the rsync synced folder there?)"

node_major=$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/' || true)
if [[ -z $node_major || $node_major -lt 20 ]]; then
  log "Node.js 20"
  apt_repo nodesource https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key "https://deb.nodesource.com/node_20.x nodistro main"
  apt_install nodejs
fi
log "node $(node --version), npm $(npm --version)"

log "copying $src to $dest"
install -d -m 0755 "$dest"
rsync -a --delete --exclude node_modules/ --exclude dist/ --exclude '*.tsbuildinfo' --exclude vagrant/ "$src/" "$dest/"
chown -R root:root "$dest"

log "npm ci and build"
cd "$dest"
npm ci --no-audit --no-fund --loglevel=error
npx --no-install tsc -b
npm prune --omit=dev --no-audit --no-fund --loglevel=error
[[ -f packages/xds/dist/cli.js && -f packages/agent/dist/cli.js ]] || die "build produced no CLIs"

for cmd in vmpilot:xds vmpilot-agent:agent; do
  name=${cmd%%:*}
  pkg=${cmd#*:}
  cat >"/usr/local/bin/$name" <<SH
#!/bin/sh
exec /usr/bin/node /opt/vmpilot/packages/$pkg/dist/cli.js "\$@"
SH
  chmod 0755 "/usr/local/bin/$name"
done
vmpilot --version >/dev/null || die "vmpilot does not run"

install -d -m 0755 /etc/vmpilot
install_unit "$dest"/systemd/*.service
