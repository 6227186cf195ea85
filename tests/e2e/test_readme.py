"""The README quick start: the ```bash block after `<!-- quickstart -->` runs as written
(against the binary under test, from the repository root). Skipped until the marker exists."""
import os
import re
import subprocess

import pytest

from conftest import REPO, keyward_bin


def _quickstart():
    path = os.path.join(REPO, "README.md")
    if not os.path.exists(path):
        return None
    text = open(path, encoding="utf-8").read()
    m = re.search(r"<!--\s*quickstart\s*-->\s*```bash\n(.*?)```", text, re.S)
    return m.group(1) if m else None


def test_readme_quickstart(tmp_path):
    script = _quickstart()
    if script is None:
        pytest.skip("README.md has no <!-- quickstart --> bash block yet")
    binary = keyward_bin()
    env = dict(os.environ)
    for k in ("KEYWARD_DB", "KEYWARD_LISTEN", "KEYWARD_SCHEMA", "KEYWARD_JWT_SECRET"):
        env.pop(k, None)
    env["PATH"] = os.path.dirname(binary) + os.pathsep + env.get("PATH", "")
    env["KEYWARD_BIN"] = binary
    # run in a scratch copy of the layout the README assumes: ./build/keyward next to the script
    work = tmp_path / "qs"
    (work / "build").mkdir(parents=True)
    os.symlink(binary, work / "build" / "keyward")
    for sub in ("scripts", "src", "docs"):
        if os.path.exists(os.path.join(REPO, sub)):
            os.symlink(os.path.join(REPO, sub), work / sub)
    full = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script
    p = subprocess.run(["bash", "-c", full], cwd=str(work), env=env, capture_output=True, timeout=90)
    assert p.returncode == 0, "quick start failed (rc %d)\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, p.stdout.decode(errors="replace")[-3000:], p.stderr.decode(errors="replace")[-3000:])
