"""Retention gates, the retention wrapper for Hugging Face encoders, the budget and the keep schedule."""

from adaret.modeling.budget import BudgetDuals, DualAscent, expected_budget, layer_keep_fractions
from adaret.modeling.encoders import EncoderAdapter, encoder_from_config, load_encoder
from adaret.modeling.gates import HardConcreteGate, HardConcreteParams
from adaret.modeling.retention import RetentionConfig, RetentionModel, RetentionOutput
from adaret.modeling.schedule import DENOMINATOR, MIN_KEEP, KeepSchedule

__all__ = [
    "DENOMINATOR",
    "MIN_KEEP",
    "BudgetDuals",
    "DualAscent",
    "EncoderAdapter",
    "HardConcreteGate",
    "HardConcreteParams",
    "KeepSchedule",
    "RetentionConfig",
    "RetentionModel",
    "RetentionOutput",
    "encoder_from_config",
    "expected_budget",
    "layer_keep_fractions",
    "load_encoder",
]
