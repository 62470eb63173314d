"""Admin console model pages: upload (validated like the CLI), activate, roll back, remove."""

from __future__ import annotations

import re

import onnx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from litegate.db.models import AuditEntry, Model
from litegate.inference.examples import write_mlp
from tests.e2e.support import csrf_of, login, make_admin_gateway, make_app
from tests.fixtures.onnx_models import (
    corrupt_file,
    expand_bomb_model,
    matmul_add_model,
    not_onnx_file,
)


@pytest.fixture
async def gateway(tmp_path):
    gw = await make_admin_gateway(tmp_path)
    yield gw
    await gw.engine.dispose()


@pytest.fixture
async def admin(gateway):
    app, _ = make_app(gateway)
    async with AsyncTestClient(app) as client:
        assert (await login(client)).status_code == 303
        yield client


async def _upload(admin, path, *, name="adder", version="", activate=True):
    token = csrf_of((await admin.get("/admin/models")).text)
    data = {"_csrf": token, "name": name, "version": version}
    if activate:
        data["activate"] = "1"
    return await admin.post(
        "/admin/models", data=data,
        files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
    )


async def _model(gateway, name="adder"):
    async with gateway.sessionmaker() as s:
        return await s.scalar(select(Model).where(Model.name == name))


async def test_upload_activate_rollback_remove(admin, gateway, tmp_path):
    good1 = matmul_add_model(tmp_path / "v1.onnx")
    good2 = matmul_add_model(tmp_path / "v2.onnx", offset=1.0)
    r = await _upload(admin, good1)
    assert r.status_code == 200 and "Model adder version 1 uploaded and validated" in r.text
    assert 'data-version="1"' in r.text and "in <code>x</code> FP32" in r.text
    r = await _upload(admin, good2, version="2")
    model = await _model(gateway)
    assert model.active_version == "2" and model.history == ["1"]
    html = r.text
    v2 = model.versions[1]
    assert v2.sha256[:12] in html
    assert re.search(r'class="num">\d+(\.\d)? (B|KiB)</td>', html)
    # files land under <home>/models/NAME/VERSION
    assert (gateway.settings.models_dir / "adder" / "2" / "model.onnx").is_file()

    token = csrf_of(html)
    r = await admin.post(f"/admin/models/{model.id}/rollback", data={"_csrf": token, "row_version": str(model.row_version)})
    assert "rolled back to version 1" in r.text
    model = await _model(gateway)
    assert model.active_version == "1"

    # a stale page (old row_version) cannot activate over someone else's change
    r = await admin.post(f"/admin/models/{model.id}/activate", data={"_csrf": token, "version": "2", "row_version": "1"})
    assert "changed by someone else" in r.text
    assert (await _model(gateway)).active_version == "1"
    r = await admin.post(f"/admin/models/{model.id}/activate", data={"_csrf": token, "version": "2", "row_version": str(model.row_version)})
    assert "version 2 is now active" in r.text

    active_id = next(v.id for v in model.versions if v.version == "2")
    old_id = next(v.id for v in model.versions if v.version == "1")
    r = await admin.post(f"/admin/models/{model.id}/versions/{active_id}/delete", data={"_csrf": token})
    assert "is active" in r.text
    r = await admin.post(f"/admin/models/{model.id}/versions/{old_id}/delete", data={"_csrf": token})
    assert "version 1 removed" in r.text
    model = await _model(gateway)
    assert [v.version for v in model.versions] == ["2"]
    async with gateway.sessionmaker() as s:
        actions = list(await s.scalars(select(AuditEntry.action).where(AuditEntry.entity_type == "model").order_by(AuditEntry.id)))
    assert actions == ["add_version", "add_version", "rollback", "activate", "remove_version"]


@pytest.mark.parametrize("maker", [corrupt_file, not_onnx_file])
async def test_bad_upload_shows_error_and_keeps_serving(admin, gateway, tmp_path, maker):
    good = matmul_add_model(tmp_path / "good.onnx")
    await _upload(admin, good)
    bad = maker(tmp_path / "broken.onnx")
    r = await _upload(admin, bad, version="2")
    assert r.status_code == 400
    errors = re.findall(r'data-field="file">([^<]*)<', r.text)
    assert errors and "broken.onnx" in errors[0], r.text[-3000:]
    assert 'value="adder"' in r.text and 'value="2"' in r.text
    model = await _model(gateway)
    assert model.active_version == "1" and [v.version for v in model.versions] == ["1"]
    assert not (gateway.settings.models_dir / "adder" / "2").exists()
    assert not any((gateway.settings.home / "uploads").iterdir())


async def test_upload_form_errors(admin, gateway, tmp_path):
    good = matmul_add_model(tmp_path / "good.onnx")
    r = await _upload(admin, good, name="../etc")
    assert r.status_code == 400
    assert "invalid" in re.findall(r'data-field="name">([^<]*)<', r.text)[0]
    await _upload(admin, good)
    r = await _upload(admin, good, version="1")
    assert r.status_code == 409
    assert "already has version" in re.findall(r'data-field="version">([^<]*)<', r.text)[0]
    token = csrf_of(r.text)
    r = await admin.post("/admin/models", data={"_csrf": token, "name": "x"})
    assert r.status_code == 400 and 'data-field="file"' in r.text


async def test_console_upload_of_a_memory_bomb_is_refused_and_shows_batching(admin, gateway,
                                                                            tmp_path):
    # Before: accepted (validation never ran the graph), its first run then allocated
    # 3.6 GB inside the serving gateway. Now the capped child refuses it; the upload's
    # temporary directory is gone and its path is never shown.
    r = await _upload(admin, expand_bomb_model(tmp_path / "bomb.onnx"))
    assert r.status_code == 400
    error = re.findall(r'data-field="file">([^<]*)<', r.text)[0]
    assert "model_check_memory_mb" in error and str(gateway.settings.home) not in error
    assert await _model(gateway) is None
    assert not any((gateway.settings.home / "uploads").iterdir())
    await _upload(admin, matmul_add_model(tmp_path / "good.onnx"))
    assert "batching off" in (await admin.get("/admin/models")).text


async def test_console_upload_can_quantize_to_int8(admin, gateway, tmp_path):
    src = write_mlp(tmp_path / "mlp.onnx")
    page = (await admin.get("/admin/models")).text
    assert 'name="quantize" value="int8"' in page
    r = await admin.post(
        "/admin/models",
        data={"_csrf": csrf_of(page), "name": "mlp", "version": "", "quantize": "int8"},
        files={"file": (src.name, src.read_bytes(), "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert "Model mlp version 1 uploaded and validated" in r.text
    assert "Quantized to INT8 (dynamic)" in r.text and "cosine similarity" in r.text
    stored = gateway.settings.models_dir / "mlp" / "1" / "model.onnx"
    ops = {n.op_type for n in onnx.load(str(stored)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    async with gateway.sessionmaker() as s:
        model = await s.scalar(select(Model).where(Model.name == "mlp"))
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.entity_name == "mlp"))
    assert model.versions[0].size_bytes < src.stat().st_size / 2
    assert entry.after["quantization"]["method"] == "dynamic"
