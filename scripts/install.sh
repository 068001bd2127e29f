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
apt-get install -y -qq --no-install-recommends protobuf-compiler ca-certificates >/dev/null
cargo build --release -p skiff
install -m 0755 target/release/skiff /usr/local/bin/skiff
exec /usr/local/bin/skiff server "$@"
