"""TensorRT engines for datacenter GPUs and Jetson, and the TensorRT-readiness lint.

Attributes load lazily: ``import adaret.engines`` pulls in neither onnx nor TensorRT, so the edge runtime
can import the sidecar and the plan runner without them.
"""

from __future__ import annotations

from adaret.core.lazy import lazy_attributes

_EXPORTS = {
    "lint_model": "adaret.engines.lint",
    "LintReport": "adaret.engines.lint",
    "Severity": "adaret.engines.lint",
    "parse_profile_spec": "adaret.engines.profiles",
    "profile_for_graph": "adaret.engines.profiles",
    "profiles_from_buckets": "adaret.engines.profiles",
    "Profile": "adaret.engines.profiles",
    "BuildRequest": "adaret.engines.decisions",
    "BuildDecisions": "adaret.engines.decisions",
    "decide_build_config": "adaret.engines.decisions",
    "EngineSidecar": "adaret.engines.sidecar",
    "sidecar_path": "adaret.engines.sidecar",
    "write_sidecar": "adaret.engines.sidecar",
    "load_sidecar": "adaret.engines.sidecar",
    "check_compatible": "adaret.engines.sidecar",
    "build_engine": "adaret.engines.builder",
    "prepare_build": "adaret.engines.builder",
    "TrtPlanRunner": "adaret.engines.trt_session",
    "plan_runner": "adaret.engines.trt_session",
    "compare": "adaret.engines.compare",
    "summarize_layers": "adaret.engines.inspection",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
