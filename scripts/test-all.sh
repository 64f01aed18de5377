#!/usr/bin/env bash
# The whole test suite, installing first whatever it needs that npm does not bring: Chromium for the
# browser test and HAProxy for the cluster tests (Debian packages), FerretDB for the MongoDB tests (built
# from the Go module proxy, unless MONGODB_TEST_URI is set or mongod is on PATH), schemathesis for the API contract test (PyPI,
# pinned, into a virtual environment in .cache/schemathesis), and for the C++ edge library's
# variants clang, qemu-user and a big-endian cross compiler (Debian packages). Then: typecheck,
# build (server and dashboard), the C++ library's tests under every variant, and every TypeScript test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "test: installing Debian's chromium for the browser test" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# test/cluster: several instances behind a load balancer, as docs/deploy.md runs them.
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  echo "test: installing Debian's haproxy for the cluster tests" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy >/dev/null
fi

# The C++ variants (clients/cpp/Makefile, test-all): clang++, and a 32-bit big-endian PowerPC build
# run under qemu-user.
if ! command -v clang++ >/dev/null 2>&1 || ! command -v qemu-ppc >/dev/null 2>&1 || ! command -v powerpc-linux-gnu-g++ >/dev/null 2>&1; then
  echo "test: installing clang, qemu-user and g++-powerpc-linux-gnu for the C++ variants" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang qemu-user g++-powerpc-linux-gnu >/dev/null
fi

if [ -z "${MONGODB_TEST_URI:-}" ] && ! command -v mongod >/dev/null 2>&1; then
  sh scripts/install-ferretdb.sh
fi

# schemathesis for test/api/schemathesis.test.ts: the pinned version, in a virtual environment under
# the git-ignored .cache, so nothing is installed into the system's Python. Reinstalled only when
# that version is not the one there.
SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV=.cache/schemathesis
if ! "$SCHEMATHESIS_VENV/bin/st" --version 2>/dev/null | grep -qx "st, version $SCHEMATHESIS_VERSION"; then
  echo "test: installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV" >&2
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian splits venv (and the pip it bootstraps) out of python3.
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$SCHEMATHESIS_VENV"
  python3 -m venv "$SCHEMATHESIS_VENV"
  "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

npm run typecheck
npm run build
make -C clients/cpp test-all
# 10 minutes a file at most; the longest, schemathesis, takes about 2.5.
node --import tsx --test --test-timeout=600000 $(find test -name '*.test.ts' | sort)
