"""``python -m litegate.inference.check MODEL MAX_BYTES TIMEOUT_S [SAMPLE.npz]``: validate
and warm up one model file (on the sample when given).

Run by :func:`litegate.inference.session.check_model_file` in a child process with an
address-space limit and a timeout. Prints ``{"signature": ...}`` (exit 0) or
``{"error": ...}`` (exit 2) as the last line on stdout, after progress lines for the
``validate`` and ``warm-up`` steps (:func:`litegate.inference.progress.report`).
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from litegate.errors import LitegateError
from litegate.inference.progress import report

# How running out of the capped address space shows up: ONNX Runtime's refused
# allocations, and thread stacks that can no longer be mapped.
OUT_OF_MEMORY = ("Failed to allocate", "bad_alloc", "Out of memory", "MemoryError",
                 "can't start new thread")


def out_of_memory(text: str) -> bool:
    return any(mark in text for mark in OUT_OF_MEMORY)


def main(argv: list[str]) -> int:
    limit = int(argv[1])
    # Set here rather than in a preexec_fn: the parent is multi-threaded.
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from litegate.inference.session import (
        LoadedSession,
        load_sample,
        validate_model_file,
        warm_up,
    )

    path = Path(argv[0])
    try:
        report("validate", 0, 1, path.name)
        signature = validate_model_file(path)
        sample = load_sample(Path(argv[3]), signature) if len(argv) > 3 else None
        report("validate", 1, 1, path.name)
        report("warm-up", 0, 1, "on the sample" if sample is not None else "on zeros")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 4
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        loaded = LoadedSession(name=path.name, version="", session=session,
                               signature=signature, providers=(), requested_providers=(),
                               fell_back=(), size_bytes=0, load_seconds=0.0)
        # The parent's timeout is the real bound; this one just ends a looping run early.
        timeout = float(argv[2])
        try:
            error = warm_up(loaded, runs=1, timeout_s=timeout, sample=sample)
        except LitegateError:  # the deadline: say which setting bounds registration
            print(json.dumps({"error": f"{path.name}: warm-up did not finish within "
                              f"{timeout:g} s (model_check_timeout_s); the model may loop "
                              "for ever"}))
            return 2
        if error and out_of_memory(error):
            raise MemoryError
        if error and sample is not None:  # zeros may be refused; the user's own sample not
            print(json.dumps({"error": f"{path.name}: the model failed on the warm-up "
                              f"sample: {error}"}))
            return 2
    except LitegateError as exc:
        if out_of_memory(exc.detail):
            return _too_big(path, limit)
        print(json.dumps({"error": exc.detail}))
        return 2
    except RuntimeError as exc:  # e.g. a thread that the capped address space cannot hold
        if not out_of_memory(str(exc)):
            raise
        return _too_big(path, limit)
    except MemoryError:
        return _too_big(path, limit)
    report("warm-up", 1, 1)
    print(json.dumps({"signature": signature.to_dict()}))
    return 0


def _too_big(path: Path, limit: int) -> int:
    print(json.dumps({"error": f"{path.name}: validation and warm-up need more than "
                      f"{limit // 2**20} MB (model_check_memory_mb)"}))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

