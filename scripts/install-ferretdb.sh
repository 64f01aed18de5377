#!/bin/sh
# Builds FerretDB (a MongoDB-wire server on SQLite) into .cache/bin for the MongoDB store tests,
# used when neither MONGODB_TEST_URI nor mongod is available. Idempotent: does nothing when the
# binary of this version is already there. Needs Go; the source comes from the Go module proxy.
#
# Why not plain `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`: that binary panics
# at start-up, because FerretDB's main package wants build/version/version.txt, which FerretDB's
# own build tooling generates and a module download does not contain. So this downloads the
# module, writes that one file, and builds the unchanged cmd/ferretdb from the copy.
set -eu

FERRETDB_VERSION="${FERRETDB_VERSION:-v1.24.2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN_DIR="$ROOT/.cache/bin"
# Per process, so that two test runs building at once do not share a tree.
SRC_DIR="$ROOT/.cache/ferretdb-src.$$"
BIN="$BIN_DIR/ferretdb"
STAMP="$BIN_DIR/ferretdb.version"

if [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FERRETDB_VERSION" ]; then
  exit 0
fi

# Go's official tarball installs to /usr/local/go, which is not always on PATH (e.g. under CI).
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="$PATH:/usr/local/go/bin"
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-ferretdb: Go is needed to build FerretDB $FERRETDB_VERSION;" >&2
  echo "or set MONGODB_TEST_URI, or put mongod on PATH." >&2
  exit 1
fi

echo "install-ferretdb: building FerretDB $FERRETDB_VERSION into $BIN_DIR (a few minutes, once)" >&2
# A user's GOFLAGS (e.g. -mod=vendor) or go.work must not reach this build.
export GOFLAGS=-mod=mod GOWORK=off
MODULE_DIR="$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
if [ -z "$MODULE_DIR" ] || [ ! -d "$MODULE_DIR" ]; then
  echo "install-ferretdb: could not download github.com/FerretDB/FerretDB@$FERRETDB_VERSION" >&2
  exit 1
fi
rm -rf "$SRC_DIR"
mkdir -p "$BIN_DIR" "$(dirname "$SRC_DIR")"
cp -R "$MODULE_DIR" "$SRC_DIR"
chmod -R u+w "$SRC_DIR"
echo "$FERRETDB_VERSION" > "$SRC_DIR/build/version/version.txt"
(cd "$SRC_DIR" && go build -buildvcs=false -trimpath -o "$BIN.tmp.$$" ./cmd/ferretdb)
mv "$BIN.tmp.$$" "$BIN"
rm -rf "$SRC_DIR"
echo "$FERRETDB_VERSION" > "$STAMP"
echo "install-ferretdb: $BIN" >&2
