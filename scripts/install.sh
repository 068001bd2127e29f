#!/usr/bin/env bash
# Installs skiff's prerequisites, builds and installs the binary, and starts a one-machine cluster
# in the foreground (Ctrl-C stops it). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "run as root: sudo $0" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev ca-certificates \
  containerd runc containernetworking-plugins busybox-static nftables iproute2 >/dev/null
cargo build --release -p skiff
install -m 0755 target/release/skiff /usr/local/bin/skiff
# A busybox image for the quick start, built locally (no registry needed): every *.tar in
# <data-dir>/agent/images is imported when the agent starts.
data_dir=/var/lib/skiff
if [ ! -f "$data_dir/agent/images/busybox.tar" ]; then
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$data_dir/agent/images"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
  done
  /usr/local/bin/skiff images build --rootfs "$rootfs" --tag busybox:1.36 -o "$data_dir/agent/images/busybox.tar"
  rm -rf "$rootfs"
fi
exec /usr/local/bin/skiff server "$@"
