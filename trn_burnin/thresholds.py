"""The verdict's thresholds and their defaults. Standard library only: the CDK configuration takes its
defaults from here too (burnInMinPeakFraction, burnInMinMedianFraction)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from trn_burnin.catalog import BF16, FP8, FP32, MXFP8

# Largest |result - reference| / max|reference| over the sampled tiles. The reference multiplies the
# same rounded inputs in float32 (MXFP8: the same host-encoded data and scales), so a healthy core
# differs only by accumulation order. MXFP8 gets 10x more room: the documents do not say how the MX
# datapath accumulates inside a scale group.
DEFAULT_MAX_REL_ERROR = {BF16: 1e-3, FP8: 1e-3, FP32: 1e-3, MXFP8: 1e-2}
DEFAULT_MIN_PEAK_FRACTION = 0.70
DEFAULT_MIN_MEDIAN_FRACTION = 0.90


@dataclass(frozen=True)
class Thresholds:
    """X, Y and the error tolerance of the verdict rules (see README)."""

    min_peak_fraction: float = DEFAULT_MIN_PEAK_FRACTION  # X: of the catalog per-core peak
    min_median_fraction: float = DEFAULT_MIN_MEDIAN_FRACTION  # Y: of the node's median core
    max_rel_error: float = DEFAULT_MAX_REL_ERROR[BF16]

    @classmethod
    def for_dtype(cls, dtype: str, **overrides: float | None) -> "Thresholds":
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{"max_rel_error": DEFAULT_MAX_REL_ERROR[dtype], **given})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
