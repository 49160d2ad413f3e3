#!/usr/bin/env bash
# Set up and run the demo: embedded broker, controller, dashboard, a simulated commune fleet.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/loa demo "$@"
