# shellcheck shell=bash
# Helpers shared by the provisioning scripts (sourced, not run). Every script is safe to run again:
# `vagrant provision` re-applies the same state.

export DEBIAN_FRONTEND=noninteractive

log() { printf '==> [%s] %s\n' "$(hostname)" "$*"; }

die() {
  printf '!!! [%s] %s\n' "$(hostname)" "$*" >&2
  exit 1
}

apt_install() {
  apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "$@" >/dev/null
}

# apt_repo NAME KEY_URL "DEB LINE WITHOUT signed-by": adds a third-party repository whose key is trusted
# for that repository only (signed-by), then refreshes the package lists when anything changed.
apt_repo() {
  local name=$1 key_url=$2 line=$3
  local keyring="/etc/apt/keyrings/${name}.gpg" list="/etc/apt/sources.list.d/${name}.list"
  install -d -m 0755 /etc/apt/keyrings
  if [[ ! -s $keyring ]]; then
    curl -fsSL --retry 5 "$key_url" | gpg --batch --yes --dearmor -o "$keyring"
    chmod 0644 "$keyring"
  fi
  local want="deb [signed-by=${keyring}] ${line}"
  if [[ ! -f $list ]] || [[ $(cat "$list") != "$want" ]]; then
    printf '%s\n' "$want" >"$list"
    apt-get update -qq
  fi
}

# ensure_user NAME HOME [UID]: a system user with its own group, no login shell, no home created.
ensure_user() {
  local name=$1 home=$2 uid=${3:-}
  if id -u "$name" >/dev/null 2>&1; then
    if [[ -n $uid && $(id -u "$name") != "$uid" ]]; then
      die "user $name exists with uid $(id -u "$name"), expected $uid (the uid the capture rules exempt)"
    fi
    return 0
  fi
  local args=(--system --user-group --home-dir "$home" --no-create-home --shell /usr/sbin/nologin)
  [[ -n $uid ]] && args+=(--uid "$uid")
  useradd "${args[@]}" "$name"
}

# install_unit FILE...: copies unit files into /etc/systemd/system and reloads systemd.
install_unit() {
  install -m 0644 -t /etc/systemd/system "$@"
  systemctl daemon-reload
}

# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every 2 s until it succeeds or time runs out.
wait_for() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 2
  done
  log "$what: ok"
}

# managed_block FILE MARKER CONTENT: replaces the lines between "# BEGIN MARKER" and "# END MARKER" (or
# appends them), leaving the rest of FILE alone.
managed_block() {
  local file=$1 marker=$2 content=$3
  local tmp
  tmp=$(mktemp)
  sed "/^# BEGIN ${marker}\$/,/^# END ${marker}\$/d" "$file" >"$tmp"
  printf '# BEGIN %s\n%s\n# END %s\n' "$marker" "$content" "$marker" >>"$tmp"
  cat "$tmp" >"$file"
  rm -f "$tmp"
}
