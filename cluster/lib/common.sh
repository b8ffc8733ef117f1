# Shared by cluster/local.sh and scripts/test.sh: install what a fresh machine lacks, build.
# Sourced, not run.

# Installs the system packages the build needs (libzstd-dev, pkg-config) when run as root;
# otherwise says exactly what to install.
ensure_system_packages() {
    local missing=()
    pkg-config --exists libzstd 2>/dev/null || missing+=(libzstd-dev)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} (apt-get)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "error: missing system packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}

# Builds the package (debug: one build serves the tests and the local cluster).
build_elastic() {
    command -v swift >/dev/null 2>&1 || { echo "error: swift is not on PATH; install Swift 6.1 or later" >&2; exit 1; }
    swift build "$@" >&2
    ELASTIC_BIN="$(swift build --show-bin-path)/elastic"
    export ELASTIC_BIN
}
