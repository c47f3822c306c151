#!/usr/bin/env bash
# Install what tests/test_browser.py needs: Debian's Chromium (system package, no browser download).
# Idempotent: does nothing when /usr/bin/chromium already runs. Safe to call from CI on every run.
#
# The Python side (voila, playwright) comes with the project's test extras. For a machine without
# them, `bash tests/browser/install.sh --with-pip` also pip-installs the pinned versions into
# ${PYTHON:-python3}. Never run `playwright install`: it downloads a browser build (no network here).
set -euo pipefail

VOILA_VERSION="0.5.13"
PLAYWRIGHT_VERSION="1.65.2"
PYTHON="${PYTHON:-python3}"
WITH_PIP=0
for arg in "$@"; do
  case "$arg" in
    --with-pip) WITH_PIP=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else echo "install.sh: need root or sudo for apt-get" >&2; exit 1; fi
fi

chromium_ok() { [ -x /usr/bin/chromium ] && timeout 60 /usr/bin/chromium --version >/dev/null 2>&1; }

if chromium_ok; then
  echo "install.sh: chromium already installed: $(/usr/bin/chromium --version 2>/dev/null)"
else
  echo "install.sh: installing Debian package: chromium (apt-get update first)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o Acquire::Retries=3 update -q
  $SUDO apt-get -o Acquire::Retries=3 install -y -q chromium fonts-dejavu-core
  chromium_ok || { echo "install.sh: chromium installed but does not run" >&2; exit 1; }
  echo "install.sh: installed $(/usr/bin/chromium --version 2>/dev/null)"
fi

if [ "$WITH_PIP" = "1" ]; then
  echo "install.sh: pip installing voila==$VOILA_VERSION playwright==$PLAYWRIGHT_VERSION into $PYTHON"
  "$PYTHON" -m pip install -q "voila==$VOILA_VERSION" "playwright==$PLAYWRIGHT_VERSION"
fi

# Report (never fails): what the browser test will find.
"$PYTHON" - <<'EOF' || true
import importlib.metadata as md
for name in ("voila", "playwright", "ipywidgets", "jupyterlab_widgets"):
    try:
        print(f"install.sh: python package {name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"install.sh: python package {name} MISSING (project test extras, or --with-pip)")
EOF
