#!/usr/bin/env bash
# The whole test suite, installing first whatever it needs that npm does not bring: Chromium for the
# browser test (Debian package), FerretDB for the MongoDB tests (built from the Go module proxy,
# unless MONGODB_TEST_URI is set or mongod is on PATH). Then: typecheck, build (server and
# dashboard), the C++ edge library's own tests, and every TypeScript test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "test: installing Debian's chromium for the browser test" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if [ -z "${MONGODB_TEST_URI:-}" ] && ! command -v mongod >/dev/null 2>&1; then
  sh scripts/install-ferretdb.sh
fi

npm run typecheck
npm run build
make -C clients/cpp test
node --import tsx --test --test-timeout=600000 $(find test -name '*.test.ts' | sort)
