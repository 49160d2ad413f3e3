#!/usr/bin/env bash
# Set up Loa on a fresh Debian machine: system packages (when root), a venv, the package.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "Lỗi: cần Python 3.11 trở lên (đang có: $("$PY" --version 2>&1))." >&2
  exit 1
fi

# Debian packages the runtime and the test suite use.
APT_PACKAGES=(mosquitto mosquitto-clients ffmpeg espeak-ng icecast2 chromium poppler-utils
              fonts-dejavu-core fonts-liberation2 postgresql victoria-metrics openssl
              pulseaudio pulseaudio-utils alsa-utils libasound2-plugins)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "Cài gói Debian: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "Cảnh báo: thiếu gói Debian ${missing[*]}; hãy chạy với quyền root hoặc:" >&2
    echo "  sudo apt-get install ${missing[*]}" >&2
  fi
fi
# Debian starts system services on install where it can; Loa starts its own instances.
for svc in mosquitto icecast2 postgresql victoria-metrics; do
  command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1 || true
done

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# requirements.lock pins every dependency (the project itself stays editable).
.venv/bin/python -m pip install -q -c requirements.lock -e ".[dev,postgres]"

if [[ -f dashboard/frontend/package.json ]]; then
  if command -v npm >/dev/null; then
    (cd dashboard/frontend && npm ci --silent --no-audit --no-fund >/dev/null)
  else
    echo "Cảnh báo: thiếu npm; giao diện sẽ không có thư viện biểu đồ." >&2
  fi
fi
echo "Đã cài đặt xong Loa (.venv)."
