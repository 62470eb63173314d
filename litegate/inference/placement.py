"""Which CUDA device a session goes to, and what it counts against that device's budget
(pure logic: no onnxruntime, no asyncio).

The model manager asks :func:`choose_device` before each load on a GPU provider: a model
pinned with its ``device_id`` option goes there; the others go to the least-loaded of
the configured devices (``LITEGATE_DEVICES``), fewest bytes charged first, then fewest
sessions, then the order given. Eviction and waiting for room under the per-device budget
(``LITEGATE_GPU_MEMORY_MB``) stay in the manager's one memory-budget routine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

MIB = 1024 * 1024


class PlacementError(ValueError):
    """A device setting or a model's ``device_id`` option that cannot be honoured."""


MAX_DEVICE_ID = 1023
"""CUDA device ids are small ordinals; anything above this is a typo, not a device."""
MAX_DEVICES = 64
"""How many devices one gateway process may be given."""
_DEVICE_ID = re.compile(r"[0-9]{1,4}")
"""ASCII digits only (``str.isdigit`` also accepts ``²`` and other scripts' digits),
and few of them, so a long number is never converted."""


def parse_devices(text: str) -> tuple[int, ...]:
    """``"0,1"`` -> ``(0, 1)``; ``""`` -> ``(0,)`` (ORT's default device). Ids are
    0-``MAX_DEVICE_ID``, at most ``MAX_DEVICES`` of them, none twice."""
    devices: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if not _DEVICE_ID.fullmatch(part) or int(part) > MAX_DEVICE_ID:
            shown = part if len(part) <= 24 else part[:24] + "..."
            raise PlacementError(
                f"devices: {shown!r} is not a CUDA device id (0-{MAX_DEVICE_ID}, e.g. 0,1)")
        if int(part) in devices:
            raise PlacementError(f"devices: device {part} is listed twice")
        devices.append(int(part))
        if len(devices) > MAX_DEVICES:
            raise PlacementError(f"devices: at most {MAX_DEVICES} devices may be listed")
    return tuple(devices) or (0,)


def pinned_device(options: Mapping[str, Any], devices: Sequence[int]) -> int | None:
    """A model's ``device_id`` option, checked against the configured devices."""
    raw = options.get("device_id")
    if raw is None or raw == "":
        return None
    try:
        device = int(raw)
    except (TypeError, ValueError):
        raise PlacementError(f"device_id {raw!r} is not a CUDA device id") from None
    if device not in devices:
        raise PlacementError(
            f"device_id {device} is not one of the configured devices "
            f"({','.join(map(str, devices))}; set LITEGATE_DEVICES / --devices)")
    return device


def choose_device(devices: Sequence[int], charged: Mapping[int, int],
                  sessions: Mapping[int, int], pinned: int | None = None) -> int:
    """The pinned device, else the least-loaded one (bytes charged, then sessions)."""
    if pinned is not None:
        return pinned
    order = {d: i for i, d in enumerate(devices)}
    return min(devices, key=lambda d: (charged.get(d, 0), sessions.get(d, 0), order[d]))


def device_charge(options: Mapping[str, Any], file_bytes: int) -> int:
    """Bytes a session is charged on its device: its ``gpu_memory_mb`` option (which also
    caps its arena, so the sum really bounds the device), else its file size (the
    weights, which the device holds for as long as the session lives)."""
    explicit = options.get("gpu_memory_mb")
    if explicit not in (None, "", 0):
        try:
            mb = float(explicit)
        except (TypeError, ValueError):
            raise PlacementError(f"gpu_memory_mb {explicit!r} is not a number") from None
        if mb <= 0:
            raise PlacementError("gpu_memory_mb must be positive")
        return int(mb * MIB)
    return max(0, int(file_bytes))


def session_mem_limit(options: Mapping[str, Any], budget_bytes: int) -> int:
    """``gpu_mem_limit`` for one session: its own ``gpu_memory_mb``, else the whole
    device budget (one session can never take more than the device is given); 0 = none."""
    explicit = options.get("gpu_memory_mb")
    if explicit not in (None, "", 0):
        return device_charge(options, 0)
    return max(0, int(budget_bytes))
