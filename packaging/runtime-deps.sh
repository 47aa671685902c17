#!/usr/bin/env bash
# Installs the container runtime k1s's kubelet supervises, only where it is missing (Debian 12, as
# root): containerd, runc, the CNI plugins and iptables (the pods' outbound NAT). Debian's own containerd service is stopped and
# disabled: k1s runs its own containerd with its own configuration, sockets and state under
# the data dir.
set -euo pipefail
need=()
for pkg in containerd runc containernetworking-plugins iptables; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "runtime-deps: installing ${need[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
    $SUDO systemctl disable --now containerd >/dev/null 2>&1 || true
  fi
fi
containerd --version
