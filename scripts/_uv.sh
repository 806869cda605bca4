# Sourced by the scripts: find uv, or install it into ./.tools on first use,
# so that a machine with nothing but Python 3.11+ can run the project.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if command -v uv >/dev/null 2>&1; then
  UV=uv
else
  if [ ! -x .tools/bin/uv ]; then
    echo "installing uv into ./.tools (once)..." >&2
    python3 -m venv .tools
    .tools/bin/pip install --quiet --disable-pip-version-check "uv>=0.5,<1"
  fi
  UV=.tools/bin/uv
fi
export UV
