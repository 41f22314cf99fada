# Sourced by the demo and test scripts: sandboxes need root (namespaces,
# mounts, cgroups, loop devices) and missing Debian packages are installed
# with apt-get. A non-root caller is re-run through sudo, keeping PATH so
# that Go is still found.
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then
    echo "==> $0 needs root: running it again with sudo" >&2
    exec sudo --preserve-env=COCOON_ISOLATION,COCOON_ROOT,CI,GOFLAGS env "PATH=$PATH" "$0" "$@"
  fi
  echo "$0 needs root (namespaces, mounts, cgroups, apt-get) and there is no sudo: run it as root" >&2
  exit 1
fi
