"""``make test`` brings its own system programs (tests/system_deps.sh): nothing to do when
they are there, an apt-get install as root, and the exact command for anyone else."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "system_deps.sh"
NEEDED = ("redis-server", "postgresql", "chromium")


def _bare_path(tmp_path: Path) -> Path:
    """A PATH with the script's helpers but none of the programs the suite needs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "apt-get", "grep"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for d in (tmp_path, bin_dir):
        d.chmod(0o755)
    return bin_dir


def _run(tmp_path: Path, *prefix: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "system_deps.sh"  # a copy other users can read
    shutil.copy(SCRIPT, script)
    script.chmod(0o755)
    bare = {"PATH": str(_bare_path(tmp_path)), "LITEGATE_PG_ROOT": str(tmp_path / "no-pg"), **env}
    return subprocess.run([*prefix, "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in bare.items()),
                           "/bin/bash", str(script)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_nothing_to_do_when_everything_is_installed():
    r = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_root_installs_the_missing_packages_with_apt(tmp_path):
    assert os.geteuid() == 0, "this machine's suite runs as root (see README)"
    r = _run(tmp_path, LITEGATE_SYSTEM_DEPS_DRY_RUN="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("would run: apt-get update && apt-get install -y "
                                "--no-install-recommends " + " ".join(NEEDED))


def test_a_user_without_sudo_is_told_the_exact_command():
    # pytest's tmp_path sits under a root-only directory: use one the user can enter.
    with tempfile.TemporaryDirectory(prefix="litegate-deps-") as tmp:
        Path(tmp).chmod(0o755)
        r = _run(Path(tmp), "runuser", "-u", "postgres", "--")
    assert r.returncode == 1
    assert ("sudo apt-get update && sudo apt-get install -y --no-install-recommends "
            + " ".join(NEEDED)) in r.stderr
