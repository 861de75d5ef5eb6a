# Shell helpers shared by the project's scripts. Source it (bash); it defines functions only.
# shellcheck shell=bash

# Prefix of progress lines: the name of the script that sourced this file.
LOG_PREFIX=${LOG_PREFIX:-$(basename "$0")}

log() { printf '%s: %s\n' "$LOG_PREFIX" "$*"; }
warn() { printf '%s: warning: %s\n' "$LOG_PREFIX" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$LOG_PREFIX" "$*" >&2
  exit 1
}

is_root() { [ "$(id -u)" = 0 ]; }
is_debian() { [ -r /etc/debian_version ] && command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; }

# Timer for progress lines: `t0=$(now)`, later `since "$t0"` prints "12.3 s".
# (BSD date, as on macOS, has no %N: whole seconds there.)
now() {
  local t
  t=$(date +%s%N)
  case "$t" in *N) echo "${t%N}000000000" ;; *) echo "$t" ;; esac
}
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", (b - a) / 1e9 }'; }

# bounded SECONDS COMMAND...: runs COMMAND, killed after SECONDS where timeout(1) exists
# (coreutils; gtimeout on macOS with Homebrew), unbounded otherwise.
bounded() {
  local secs=$1
  shift
  if command -v timeout >/dev/null 2>&1; then
    timeout "$secs" "$@"
  elif command -v gtimeout >/dev/null 2>&1; then
    gtimeout "$secs" "$@"
  else
    "$@"
  fi
}

# Prints those of the given Debian packages that are not installed.
missing_debs() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || echo "$pkg"
  done
}

# apt-get install (as root on Debian), running `apt-get update` once per script run.
# Output goes to a log file; its end is shown when apt fails.
APT_LOG=/var/log/exactly-apt.log
APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update (log: $APT_LOG)"
    apt-get update >>"$APT_LOG" 2>&1 || { tail -n 20 "$APT_LOG" >&2; die "apt-get update failed"; }
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$APT_LOG" 2>&1 ||
    { tail -n 20 "$APT_LOG" >&2; die "apt-get install $* failed"; }
}

# The machine's own Debian mirror, from its apt sources (never a hard-coded host).
debian_mirror() {
  local uri
  # deb822 sources first (URIs: lines), then one-line sources.list entries; skip security mirrors.
  for uri in $(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null) \
    $(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null); do
    case "$uri" in *security*) continue ;; esac
    echo "$uri"
    return 0
  done
  return 1
}

# Sets DOCKER to a docker CLI that can talk to the running engine, or returns 1.
# /usr/local/bin/docker may be a newer CLI than Debian's engine; it normally negotiates the API
# version down, but if it cannot, Debian's own /usr/bin/docker matches its engine.
DOCKER=""
find_docker_cli() {
  local cli
  for cli in docker /usr/bin/docker; do
    command -v "$cli" >/dev/null 2>&1 || continue
    if bounded 20 "$cli" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
      DOCKER=$cli
      return 0
    fi
  done
  return 1
}

# Label of a local image ("" if the image or label is missing).
image_label() {
  "$DOCKER" image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null | sed 's/^<no value>$//'
}

image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# sha256 of a recipe: the files under the given paths (names and contents, in a stable order),
# then any extra text given on stdin (e.g. the definition of the shell function that builds it).
recipe_hash() {
  {
    find "$@" -type f -print0 | LC_ALL=C sort -z | while IFS= read -r -d '' f; do
      # the path relative to the repository and whether it is executable (as git records it)
      if [ -x "$f" ]; then printf '%s x\n' "${f#"$REPO_ROOT"/}"; else printf '%s\n' "${f#"$REPO_ROOT"/}"; fi
      sha256sum <"$f"
    done
    cat
  } | sha256sum | cut -d' ' -f1
}
