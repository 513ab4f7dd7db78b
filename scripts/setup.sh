#!/usr/bin/env bash
# Set up everything anp-async needs on a fresh Debian machine (run as root):
# the Debian tools the tests and demo use, and a virtual environment at .venv with the
# package installed (editable) and its test/bench/fast extras. Idempotent and quick when
# nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(iproute2 iputils-ping iputils-arping netcat-openbsd curl tcpdump tshark socat iperf3 nftables procps python3-venv)

# The LD_PRELOAD library (anp run -- PROGRAM) is C: a compiler, if the machine has none.
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || APT_PACKAGES+=(gcc libc6-dev)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.anp-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x .venv/bin/anp ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,bench,fast]'
  echo "$want" > "$stamp"
fi

# libanp_preload.so, beside its source (rebuilt only when the source changed).
.venv/bin/python -c "from anp_async.preload.build import library_path; library_path()"
