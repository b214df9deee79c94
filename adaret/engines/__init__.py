"""TensorRT engines for datacenter GPUs and Jetson, and the TensorRT-readiness lint.

Attributes load lazily: ``import adaret.engines`` pulls in neither onnx nor TensorRT, so the edge runtime
can import the sidecar and the plan runner without them.
"""

from __future__ import annotations

from adaret.core.lazy import by_module, lazy_attributes

_EXPORTS = by_module({
    "adaret.engines.lint": ("lint_model", "LintReport", "Severity"),
    "adaret.engines.profiles": ("parse_profile_spec", "profile_for_graph", "profiles_from_buckets", "Profile"),
    "adaret.engines.decisions": ("BuildRequest", "BuildDecisions", "decide_build_config"),
    "adaret.engines.sidecar": ("EngineSidecar", "sidecar_path", "write_sidecar", "load_sidecar", "check_compatible"),
    "adaret.engines.builder": ("build_engine", "prepare_build"),
    "adaret.engines.trt_session": ("TrtPlanRunner", "plan_runner"),
    "adaret.engines.compare": ("compare",),
    "adaret.engines.inspection": ("summarize_layers",),
})

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
