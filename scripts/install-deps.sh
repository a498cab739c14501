#!/usr/bin/env bash
# Installs what eccl needs to build and test on Debian 12. Idempotent: packages already present
# are left alone, and apt-get runs only when something is missing.
set -euo pipefail

pkgs=(build-essential pkg-config libcmocka-dev libcurl4-openssl-dev libjansson-dev
      libibverbs-dev libssl-dev etcd-server etcd-client openssl iproute2 procps clang-format
      clang libclang-rt-14-dev curl python3 gnuplot-nox)
# tests/deploy/test_manifests.sh: YAML parsing and lint, and node/npm for its schema validator
# (installed from npm by the test itself; kubectl with kustomize v4+ comes with the machine image,
# Debian 12's kubernetes-client is too old).
pkgs+=(python3-yaml yamllint)
command -v npm >/dev/null || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: everything is installed"
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
