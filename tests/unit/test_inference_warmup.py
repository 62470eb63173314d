"""Warm-up uses the smallest shapes a signature allows (1 per dynamic dimension). Run in
a child process capped at 1.5 GB of address space: the old 8-per-dimension warm-up of an
11-dimension input asked for 8**11 floats (34 GB)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fixtures.onnx_models import many_dims_model

CHILD = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))
    from pathlib import Path
    from litegate.inference.session import dummy_inputs, load_session, warm_up
    from litegate.settings import Settings
    loaded = load_session(Path(sys.argv[1]), Settings(providers="cpu", intra_op_threads=1),
                          name="m", version="1")
    print([list(a.shape) for a in dummy_inputs(loaded.signature).values()])
    print("warm" if warm_up(loaded, runs=1) in (None, True) else "failed")
""")


def test_warm_up_uses_minimal_shapes_in_a_capped_child(tmp_path) -> None:
    path = many_dims_model(tmp_path / "dims.onnx")
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                         text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
                         check=False)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stderr[-2000:]
    assert lines[-2] == str([[1] * 11]) and lines[-1] == "warm", out.stdout[-2000:]
