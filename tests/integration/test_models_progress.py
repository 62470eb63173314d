"""Progress of ``litegate models add`` (copy, validation, quantization, warm-up): rich bars
in a terminal (a real pseudo-terminal here), plain lines on stderr when it is not one,
nothing at all with ``--json``; and the plumbing under it."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from litegate.cli.progress import PlainProgress
from litegate.inference.files import copy_model
from litegate.inference.progress import child_result, run_child
from litegate.inference.quantize import STEPS
from tests.fixtures.onnx_models import amplify_model, external_data_model
from tests.helpers.cli import LITEGATE_BIN, clean_env, run_litegate

ESC = "\x1b["


def _in_pty(argv: list[str], home: Path) -> tuple[int, str]:
    """Run the installed command with stdin, stdout and stderr on a pseudo-terminal."""
    master, slave = pty.openpty()
    env = clean_env(LITEGATE_HOME=str(home), COLUMNS="120", TERM="xterm-256color")
    proc = subprocess.Popen([LITEGATE_BIN, *argv], stdin=slave, stdout=slave, stderr=slave,
                            env=env, cwd=home.parent, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(60), b"".join(chunks).decode(errors="replace")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return amplify_model(tmp_path / "amp.onnx", cols=1024)  # 1 MiB of weights: 2 chunks


def test_terminal_gets_rich_bars_for_every_step(tmp_path: Path, model: Path) -> None:
    code, out = _in_pty(["models", "add", "amp", str(model), "--quantize", "int8"],
                        tmp_path / "home")
    assert code == 0, out
    assert ESC in out and "━" in out  # drawn (and redrawn) by rich
    # Which intermediate frames rich draws depends on its refresh timer; its last frame,
    # drawn when the work ends, always shows every task complete.
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    for task in ("quantize  done", "validate  model.onnx", "warm-up   on zeros", "copy      model.onnx"):
        assert re.search(re.escape(task) + r" +━+ +100%", screen), (task, screen[-1500:])
    assert "added amp version 1" in out  # the result still prints after the bars


def test_not_a_terminal_gets_plain_lines_on_stderr(tmp_path: Path, model: Path) -> None:
    out = run_litegate("models", "add", "amp", str(model), home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("added amp version 1") and out.stdout.count("\n") == 1
    assert ESC not in out.stderr and "━" not in out.stderr
    lines = out.stderr.splitlines()
    assert lines[:4] == ["validate: 0% (amp.onnx)", "validate: 100% (amp.onnx)",
                         "warm-up: 0% (on zeros)", "warm-up: 100%"]
    # 1 MiB chunks of a file a little over 1 MiB: the start, the first chunk, the end
    assert lines[4:] == ["copy: 0% (amp.onnx)", "copy: 99% (amp.onnx)",
                         "copy: 100% (amp.onnx)"]


def test_quantize_steps_as_plain_lines(tmp_path: Path, model: Path) -> None:
    out = run_litegate("models", "add", "amp", str(model), "--quantize", "int8",
                       home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    steps = [line for line in lines if line.startswith("quantize: ")]
    assert steps == [f"quantize: {20 * i}% ({s})" for i, s in enumerate([*STEPS, "done"])]
    # then the quantized file is checked and copied like any other
    assert lines[len(steps):][0] == "validate: 0% (model.onnx)"
    assert lines[-1] == "copy: 100% (model.onnx)"


@pytest.mark.parametrize("extra", [[], ["--quantize", "int8"]], ids=["plain", "quantize"])
def test_json_output_is_exactly_one_document(tmp_path: Path, model: Path,
                                             extra: list[str]) -> None:
    out = run_litegate("models", "add", "amp", str(model), "--json", *extra,
                       home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # raises on anything before or after the document
    assert doc["name"] == "amp" and doc["version"] == "1"
    assert ("quantization" in doc) == bool(extra)
    assert out.stderr == ""


def test_json_in_a_terminal_draws_nothing(tmp_path: Path, model: Path) -> None:
    code, out = _in_pty(["models", "add", "amp", str(model), "--json"], tmp_path / "home")
    assert code == 0, out
    assert "━" not in out and "validate" not in out
    assert json.loads(out)["name"] == "amp"


# --------------------------------------------------------------------- plumbing


def test_plain_lines_only_at_quarters_and_new_notes() -> None:
    stream = io.StringIO()
    progress = PlainProgress(stream)
    for done in range(0, 1001, 10):  # 101 reports
        progress("copy", done, 1000, "big.onnx")
    progress("copy", 1000, 1000, "big.onnx")  # repeated: nothing new
    assert stream.getvalue().splitlines() == [
        f"copy: {p}% (big.onnx)" for p in (0, 25, 50, 75, 100)]


def test_copy_reports_every_byte_of_the_model_and_its_external_data(tmp_path: Path) -> None:
    source = external_data_model(tmp_path / "src" / "ext.onnx")
    seen: list[tuple[str, float, float, str]] = []
    digest, size = copy_model(source, tmp_path / "dst", "model.onnx",
                              lambda *event: seen.append(event))  # type: ignore[arg-type]
    expected = source.stat().st_size + (source.parent / "ext.onnx.data").stat().st_size
    assert size == expected
    assert seen[0] == ("copy", 0, expected, "ext.onnx")
    assert seen[-1] == ("copy", expected, expected, "ext.onnx")
    assert all(task == "copy" and total == expected for task, _, total, _ in seen)


def test_run_child_forwards_progress_and_returns_the_other_lines() -> None:
    script = ("from litegate.inference.progress import report\n"
              "print('noise')\n"
              "report('step', 1, 2, 'half')\n"
              "print('{\"progress\": broken')\n"
              "report('step', 2, 2)\n"
              "print('{\"result\": 1}')\n")
    seen: list[tuple[str, float, float, str]] = []
    code, lines = run_child([sys.executable, "-c", script], timeout=30, env=os.environ,
                            progress=lambda *event: seen.append(event))  # type: ignore[arg-type]
    assert code == 0
    assert seen == [("step", 1.0, 2.0, "half"), ("step", 2.0, 2.0, "")]
    assert lines == ["noise", '{"result": 1}']


def test_run_child_is_killed_at_its_timeout() -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_child([sys.executable, "-c", "import time; print('x', flush=True); time.sleep(60)"],
                  timeout=1, env=os.environ)


def test_child_result_is_the_last_line_when_it_is_a_json_object() -> None:
    assert child_result(["noise", '{"signature": {}}']) == {"signature": {}}
    for lines in ([], ["Killed"], ['{"signature": 1}', "[1, 2]"], ['"text"'], ["null"]):
        assert child_result(lines) == {}


@pytest.mark.parametrize("last", ["[1, 2]", '"signature"', "null", "3"])
def test_a_child_ending_on_json_that_is_no_object_is_an_invalid_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, last: str
) -> None:
    """Before, null or a number raised a TypeError on ``"signature" in result`` (and a
    string one from reading its signature); a list was already no result."""
    from litegate.inference import session

    def child(argv: list[str], **kwargs: object) -> tuple[int, list[str]]:
        return run_child([sys.executable, "-c", f"print({last!r})"], **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(session, "run_child", child)
    with pytest.raises(session.InvalidModel, match=r"crashed \(exit status 0\)"):
        session.check_model_file(tmp_path / "m.onnx", None)
