#!/usr/bin/env bash
# Makes sure headless Chromium is on this machine for the browser check of index.html
# (scripts/oracles/check_page.py) and prints its path on the last line. Uses $MRI_AD_CHROMIUM or
# /usr/bin/chromium when present; otherwise, as root on Debian, installs Debian's chromium package
# (nothing is downloaded from outside the package registry). Anywhere else it says what to install.
set -euo pipefail
chromium=${MRI_AD_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "installing Debian's chromium for the browser check of index.html" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium > /dev/null 2>&1 || { apt-get update -q > /dev/null && apt-get install -y -q chromium > /dev/null; }
  else
    echo "no Chromium at $chromium: install it (Debian/Ubuntu: apt-get install chromium) or set MRI_AD_CHROMIUM" >&2
    exit 2
  fi
fi
echo "$chromium"
