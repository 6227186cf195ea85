#!/usr/bin/env bash
# Installs what is missing (Debian packages), builds keyward, and runs the service on its
# embedded default: SQLite at ./keyward.db, listening on 127.0.0.1:8080.
# Extra arguments go to `keyward serve` (e.g. --listen 0.0.0.0:8080 --db sqlite:/var/lib/keyward.db).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/install-deps.sh"
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$here/build" -j"$(nproc)" --target keyward >/dev/null
exec "$here/build/keyward" serve "$@"
