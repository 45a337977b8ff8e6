#!/usr/bin/env bash
# Installs the embedded toolchain the firmware needs, through Debian packages:
#   - Debian's rustc/cargo 1.96 with library source (build-std for thumbv7em/thumbv8m),
#   - lld (rust-lld for thumb targets), QEMU for the Cortex-M boards and qemu-user,
#   - the aarch64 cross gcc and libc for NEON tests under qemu-aarch64.
# Idempotent: packages already installed are not touched and `apt-get update` is skipped.
# Must run as root on a Debian/Ubuntu machine; otherwise it says exactly what is missing.
set -euo pipefail

PACKAGES=(
  rustc-web cargo-web rust-web-src rust-web-llvm lld-22
  qemu-system-arm qemu-user
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

check_tools() {
  local bad=0
  [ -x /usr/bin/rustc ] || { echo "setup-toolchain: /usr/bin/rustc (rustc-web) not found"; bad=1; }
  [ -d /usr/lib/rustlib/src/rust/library ] || { echo "setup-toolchain: /usr/lib/rustlib/src/rust/library (rust-web-src) not found"; bad=1; }
  command -v rust-lld >/dev/null 2>&1 || [ -x /usr/bin/rust-lld ] || { echo "setup-toolchain: rust-lld (lld-22) not found"; bad=1; }
  command -v qemu-system-arm >/dev/null 2>&1 || { echo "setup-toolchain: qemu-system-arm not found"; bad=1; }
  return $bad
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-toolchain: all packages present (${PACKAGES[*]})"
  check_tools
  exit $?
fi

echo "setup-toolchain: missing packages: ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-toolchain: no apt-get on this machine; install these Debian packages (or equivalents) by hand: ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-toolchain: not root; run as root (or: sudo apt-get install -y --no-install-recommends ${missing[*]})" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
check_tools
echo "setup-toolchain: done"
