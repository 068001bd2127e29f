#!/usr/bin/env bash
# Regenerates skiff.order.gz from a release build: runs the pods, api, controllers and scheduler
# benchmarks with trace.c preloaded and lists the functions the node agent, then the server,
# executed, keeping those an earlier order listed. Needs root (the pods bench runs containerd),
# cc, nm and python3; run it twice after large changes (see README.md):
#   cargo build --release -p skiff && tools/hot-functions/profile.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/skiff}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -shared -fPIC -O2 -o "$tmp/trace.so" "$here/trace.c" -lpthread
cp "$bin" "$tmp/skiff"
export TRACE_EXE="$tmp/skiff" TRACE_OUT="$tmp/pages"
run() {
  # Processes inside containers inherit LD_PRELOAD but not the file; ld.so says so and goes on.
  LD_PRELOAD="$tmp/trace.so" "$tmp/skiff" bench "$@" 2> >(grep -v 'cannot be preloaded' >&2)
}
run pods
run api --objects 2000 --creates 500
run controllers --nodes 50 --replicas 300
run scheduler --nodes 500 --pods 2000
# Agent first (its memory is what the order is for), then each server in the order it ran.
mapfile -t agent < <(ls -tr "$tmp"/pages.agent.*)
mapfile -t server < <(ls -tr "$tmp"/pages.server.*)
previous=()
[ -f "$here/skiff.order.gz" ] && previous=(--previous "$here/skiff.order.gz")
python3 "$here/symbols.py" "$tmp/skiff" "${previous[@]}" \
  --section agent "${agent[@]}" --section server "${server[@]}" | gzip -9n >"$tmp/order.gz"
mv "$tmp/order.gz" "$here/skiff.order.gz"
echo "wrote $here/skiff.order.gz: $(gzip -dc "$here/skiff.order.gz" | grep -vc '^#') functions"
