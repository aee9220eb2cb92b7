#!/bin/sh
# Set up aiport in ./.venv: the system packages it uses (when run as root or with
# sudo) and the Python package. `--test` adds the test tools.
#   sh scripts/setup.sh          # to serve
#   sh scripts/setup.sh --test   # to run the tests
set -eu
cd "$(dirname "$0")/.."

# ImageMagick (wand) and FFmpeg for the media transforms; espeak-ng for local speech.
APT_PACKAGES="libmagickwand-6.q16-6 ffmpeg espeak-ng"
if [ "${1:-}" = "--test" ]; then
    APT_PACKAGES="$APT_PACKAGES imagemagick chromium"
fi

missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="none"; fi
    if [ "$SUDO" = none ]; then
        echo "setup: please install these Debian packages:$missing" >&2
    else
        echo "setup: installing$missing" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# setuptools and wheel too: the venv ships an old setuptools, and the packaging test builds a wheel.
.venv/bin/python -m pip install -q --upgrade pip "setuptools>=68" wheel
if [ "${1:-}" = "--test" ]; then
    .venv/bin/python -m pip install -q -e '.[test]'
else
    .venv/bin/python -m pip install -q -e .
fi
