"""Model registry through the real CLI and database: validation, copy, audit, switching."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from litegate.cli.common import transaction
from litegate.db.models import AuditEntry, ConfigState, Model
from litegate.settings import Settings
from tests.fixtures.onnx_models import (
    corrupt_file,
    matmul_add_model,
    not_onnx_file,
    truncated_model,
    unsupported_op_model,
)
from tests.helpers.cli import run_cli


def _db(home: Path):
    async def read():
        async with transaction(Settings.load(home=home)) as s:
            models = {m.name: m for m in await s.scalars(select(Model))}
            audit = list(await s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
            version = await s.scalar(select(ConfigState.version))
            return models, audit, int(version or 0)

    return asyncio.run(read())


def _models_json(home: Path) -> dict:
    code, out, err = run_cli("models", "list", "--json", home=home)
    assert code == 0, err
    return {m["name"]: m for m in json.loads(out)}


def test_add_copies_checksums_records_signature_and_audits(tmp_path, home) -> None:
    src = matmul_add_model(tmp_path / "src" / "add.onnx")
    code, out, err = run_cli("models", "add", "add", str(src), "--max-batch", "16",
                             "--max-queue-delay-ms", "3", "--hot", "--json", home=home)
    assert code == 0, err
    added = json.loads(out)
    assert added["version"] == "1" and added["active_version"] == "1"
    stored = home / "models" / "add" / "1" / "model.onnx"
    assert stored.read_bytes() == src.read_bytes()
    assert added["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert added["signature"] == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
    models, audit, version = _db(home)
    m = models["add"]
    assert (m.max_batch_size, m.max_queue_delay_ms, m.hot) == (16, 3.0, True)
    assert m.versions[0].path == str(stored.resolve())
    assert [(a.action, a.entity_type, a.entity_name) for a in audit] == [
        ("add_version", "model", "add")]
    assert audit[0].after["added"]["sha256"] == added["sha256"]
    assert version == 1


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "not_onnx", "unsupported_op", "missing"])
def test_bad_files_are_rejected_with_a_clear_message_and_nothing_written(tmp_path, home, kind):
    good = matmul_add_model(tmp_path / "good.onnx")
    assert run_cli("models", "add", "m", str(good), home=home)[0] == 0
    _, audit_before, version_before = _db(home)
    bad = {
        "corrupt": lambda: corrupt_file(tmp_path / "bad.onnx"),
        "truncated": lambda: truncated_model(tmp_path / "bad.onnx", good),
        "not_onnx": lambda: not_onnx_file(tmp_path / "bad.onnx"),
        "unsupported_op": lambda: unsupported_op_model(tmp_path / "bad.onnx"),
        "missing": lambda: tmp_path / "nope.onnx",
    }[kind]()
    code, out, err = run_cli("models", "add", "m", str(bad), "--activate", home=home)
    assert code == 1
    expected = {
        "corrupt": "is not a valid ONNX model",
        "truncated": "is not a valid ONNX model",
        "not_onnx": "is not a valid ONNX model",
        "unsupported_op": "onnxruntime",
        "missing": "no such file",
    }[kind]
    assert expected in err and "Traceback" not in err
    assert sorted(p.name for p in (home / "models" / "m").iterdir()) == ["1"]
    models, audit, version = _db(home)
    assert [v.version for v in models["m"].versions] == ["1"]
    assert models["m"].active_version == "1"  # the previous version keeps serving
    assert len(audit) == len(audit_before) and version == version_before


def test_activate_rollback_remove(tmp_path, home) -> None:
    for offset in (0.0, 1.0, 2.0):
        src = matmul_add_model(tmp_path / f"v{offset}.onnx", offset=offset)
        assert run_cli("models", "add", "m", str(src), home=home)[0] == 0
    assert _models_json(home)["m"]["active_version"] == "1"  # later adds do not activate
    assert run_cli("models", "activate", "m", "2", home=home)[0] == 0
    assert run_cli("models", "activate", "m", "3", home=home)[0] == 0
    assert _models_json(home)["m"]["history"] == ["1", "2"]
    code, out, _ = run_cli("models", "rollback", "m", home=home)
    assert code == 0 and "version 2" in out
    code, out, _ = run_cli("models", "rollback", "m", home=home)
    assert code == 0 and "version 1" in out
    code, _, err = run_cli("models", "rollback", "m", home=home)
    assert code == 1 and "no previous version" in err

    code, _, err = run_cli("models", "remove", "m", "1", home=home)
    assert code == 1 and "is active" in err
    assert run_cli("models", "remove", "m", "3", home=home)[0] == 0
    assert not (home / "models" / "m" / "3").exists()
    assert [v["version"] for v in _models_json(home)["m"]["versions"]] == ["1", "2"]
    code, _, err = run_cli("models", "activate", "m", "3", home=home)
    assert code == 1 and "no version '3'" in err
    _, audit, version = _db(home)
    assert [a.action for a in audit] == ["add_version"] * 3 + [
        "activate", "activate", "rollback", "rollback", "remove_version"]
    assert audit[3].before["active_version"] == "1" and audit[3].after["active_version"] == "2"
    assert version == len(audit)


def test_names_and_duplicate_versions_are_refused(tmp_path, home) -> None:
    src = matmul_add_model(tmp_path / "a.onnx")
    code, _, err = run_cli("models", "add", "../evil", str(src), home=home)
    assert code == 1 and "model name '../evil' is invalid" in err
    assert run_cli("models", "add", "m", str(src), "--version", "1", home=home)[0] == 0
    code, _, err = run_cli("models", "add", "m", str(src), "--version", "1", home=home)
    assert code == 1 and "already has version '1'" in err
    # Versions are canonical positive integers: before, "01", "1.0" and "v1" were
    # registered as three more versions next to "1".
    for label in ("01", "1.0", "v1", "0", "-1", "a/b"):
        code, _, err = run_cli("models", "add", "m", str(src), "--version", label, home=home)
        assert code == 1 and "positive integer" in err, (label, err)
    # "M" next to "m" was a second model before; now refused by name.
    code, _, err = run_cli("models", "add", "M", str(src), home=home)
    assert code == 1 and "'m' already exists; names differ only in case" in err
    assert not (home.parent / "evil").exists()
    assert sorted(_models_json(home)) == ["m"]
    assert [v["version"] for v in _models_json(home)["m"]["versions"]] == ["1"]


def test_serving_options_are_stored_with_the_model(tmp_path, home) -> None:
    src = matmul_add_model(tmp_path / "a.onnx")
    code, _, err = run_cli("models", "add", "m", str(src), "--option", "instances=2",
                           "--option", "providers=cpu", "--tokenizer", "builtin:minilm",
                           home=home)
    assert code == 0, err
    assert _models_json(home)["m"]["options"] == {
        "instances": 2, "providers": "cpu", "tokenizer": "builtin:minilm"}
    code, _, err = run_cli("models", "add", "m", str(src), "--option", "oops", home=home)
    assert code == 2 and "KEY=VALUE" in err
