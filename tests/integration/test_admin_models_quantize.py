"""Console upload with "Quantize to INT8": the same ModelService path as the CLI."""

from __future__ import annotations

import onnx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from litegate.db.models import AuditEntry, Model
from litegate.inference.examples import write_mlp
from tests.e2e.support import csrf_of, login, make_admin_gateway, make_app


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
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(stored)).graph.node} or \
        "DynamicQuantizeMatMul" in {n.op_type for n in onnx.load(str(stored)).graph.node}
    async with gateway.sessionmaker() as s:
        model = await s.scalar(select(Model).where(Model.name == "mlp"))
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.entity_name == "mlp"))
    assert model.versions[0].size_bytes < src.stat().st_size / 2
    assert entry.after["quantization"]["method"] == "dynamic"
