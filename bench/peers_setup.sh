#!/usr/bin/env bash
# Installs the benchmark peers into their own environments under bench/.peers/ (git-ignored),
# never into the project's .venv. Idempotent: a peer already installed is kept.
#   bench/peers_setup.sh [pytriton] [litellm] [portkey]     (default: all three)
# A peer whose install fails is reported (log in bench/.peers/setup_NAME.log) and skipped;
# the benchmarks then record that target as not run, with the reason.
#   pytriton  NVIDIA PyTriton (ships the Triton Inference Server binary) + onnxruntime at the
#             release litegate's .venv runs, numpy < 2 (PyTriton needs it) -> .peers/pytriton
#   litellm   'litellm[proxy]' -> .peers/litellm
#   portkey   npm @portkey-ai/gateway (PORTKEY_VERSION, default 1.15.2) -> .peers/node
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PEERS="$HERE/.peers"
PY="${PYTHON:-python3}"
mkdir -p "$PEERS"
ORT_VERSION="${ORT_VERSION:-$("$HERE/../.venv/bin/python" -c 'import onnxruntime as o; print(o.__version__)' 2>/dev/null)}"
status=0

venv() {  # name, pip args...
  local name="$1"; shift
  [ -f "$PEERS/$name/.installed" ] && { echo "$name: already installed" >&2; return 0; }
  echo "$name: installing $* (log: .peers/setup_$name.log)" >&2
  rm -rf "${PEERS:?}/$name"
  if "$PY" -m venv "$PEERS/$name" && "$PEERS/$name/bin/pip" install -q "$@" \
      >"$PEERS/setup_$name.log" 2>&1; then
    touch "$PEERS/$name/.installed"
  else
    echo "$name: install FAILED (see bench/.peers/setup_$name.log)" >&2
    status=1
  fi
}

for peer in "${@:-pytriton litellm portkey}"; do for p in $peer; do case "$p" in
  pytriton) venv pytriton "onnxruntime${ORT_VERSION:+==$ORT_VERSION}" 'numpy<2' nvidia-pytriton ;;
  litellm) venv litellm 'litellm[proxy]' ;;
  portkey)
    js="$PEERS/node/node_modules/@portkey-ai/gateway/build/start-server.js"
    if [ -f "$js" ]; then echo "portkey: already installed" >&2
    elif ! command -v npm >/dev/null; then echo "portkey: npm not found" >&2; status=1
    elif ! npm install --prefix "$PEERS/node" "@portkey-ai/gateway@${PORTKEY_VERSION:-1.15.2}" \
        >"$PEERS/setup_portkey.log" 2>&1; then
      echo "portkey: install FAILED (see bench/.peers/setup_portkey.log)" >&2; status=1
    fi ;;
  *) echo "unknown peer $p (pytriton, litellm, portkey)" >&2; status=2 ;;
esac; done; done
exit $status
