"""What ``brainedge optimize`` produces: variants, quantization approaches and the parity gate."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from brainedge.errors import ConfigError
from runtime.ood_score import METHODS as OOD_METHODS


class Format(str, Enum):
    TFLITE = "tflite"
    ONNX = "onnx"


class QuantApproach(str, Enum):
    """Post-training precision of an artifact."""

    FP32 = "fp32"
    FP16 = "fp16"  # float16 weights (TFLite: dequantized on CPU, native on GPU delegates)
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, float activations quantized on the fly
    INT8 = "int8"  # full integer: weights and activations, calibrated


class Source(str, Enum):
    """Which Keras model a variant is converted from."""

    BASE = "base"  # the trained float32 model
    PRUNED = "pruned"  # magnitude pruning to a target sparsity, fine-tuned, stripped
    PRUNED_2_4 = "pruned-2x4"  # structured 2:4 sparsity
    # the pruned model with each kernel's non-zero weights clustered onto a few shared values
    PRUNED_CLUSTERED = "pruned-clustered"
    QAT = "qat"  # quantization-aware training, then int8


@dataclass(frozen=True)
class Variant:
    source: Source
    format: Format
    approach: QuantApproach

    @property
    def name(self) -> str:
        prefix = "" if self.source is Source.BASE else f"{self.source.value}-"
        return f"{prefix}{self.format.value}-{self.approach.value}"

    @classmethod
    def parse(cls, name: str) -> Variant:
        for variant in ALL_VARIANTS:
            if variant.name == name:
                return variant
        raise ConfigError(f"unknown variant {name!r}; choose from: "
                          + ", ".join(v.name for v in ALL_VARIANTS))


_TFLITE = [QuantApproach.FP32, QuantApproach.FP16, QuantApproach.INT8_DYNAMIC,
           QuantApproach.INT8]
_ONNX = [QuantApproach.FP32, QuantApproach.FP16, QuantApproach.INT8]
ALL_VARIANTS: tuple[Variant, ...] = (
    *(Variant(Source.BASE, Format.TFLITE, a) for a in _TFLITE),
    *(Variant(Source.BASE, Format.ONNX, a) for a in _ONNX),
    *(Variant(Source.PRUNED, Format.TFLITE, a) for a in _TFLITE),
    *(Variant(Source.PRUNED_2_4, Format.TFLITE, a) for a in (QuantApproach.FP32,
                                                              QuantApproach.INT8)),
    *(Variant(Source.PRUNED_CLUSTERED, Format.TFLITE, a) for a in (QuantApproach.FP32,
                                                                    QuantApproach.INT8)),
    Variant(Source.QAT, Format.TFLITE, QuantApproach.INT8),
)
# Off by default: QAT (for when post-training int8 loses too much), and the clustered float32
# model, which int8 clustering beats on size at the same accuracy (on the shared DenseNet121
# the float32 one lost 1.05 points, the int8 one 0.82).
OPT_IN_VARIANTS = (Variant(Source.QAT, Format.TFLITE, QuantApproach.INT8),
                   Variant(Source.PRUNED_CLUSTERED, Format.TFLITE, QuantApproach.FP32))
DEFAULT_VARIANTS = tuple(v for v in ALL_VARIANTS if v not in OPT_IN_VARIANTS)


@dataclass(frozen=True)
class PruneConfig:
    target_sparsity: float = 0.5
    fine_tune_epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not 0.0 < self.target_sparsity < 1.0:
            raise ConfigError(f"target sparsity must be in (0, 1), got {self.target_sparsity}")
        if self.fine_tune_epochs < 1:
            raise ConfigError("pruning needs at least 1 fine-tuning epoch")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning rate must be in (0, 1), got {self.learning_rate}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ClusterConfig:
    clusters: int = 16  # shared values per kernel besides zero: at most 4 bits each
    fine_tune_epochs: int = 1
    learning_rate: float = 1e-5  # centroids only move; TFMOT's examples use 1e-5 too
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not 2 <= self.clusters <= 256:
            raise ConfigError(f"clusters must be in 2..256, got {self.clusters}")
        if self.fine_tune_epochs < 0:
            raise ConfigError("cluster fine-tuning epochs must be >= 0")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning rate must be in (0, 1), got {self.learning_rate}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class OptimizeConfig:
    run_dir: Path
    out_dir: Path | None = None  # default: RUN_DIR/optimized
    variants: tuple[Variant, ...] = DEFAULT_VARIANTS
    calibration_size: int = 200  # training images for int8 calibration
    min_calibration_size: int = 10
    onnx_opset: int = 17
    int8_io: str = "int8"  # input/output type of full-integer TFLite: int8 or uint8
    tolerance: float = 0.01  # max accuracy drop below the parent (fraction, 0.01 = 1 point)
    allow_failures: bool = False
    # Variants already built from the same parent with the same settings are kept, so a run
    # that was stopped resumes; True builds every requested variant again.
    rebuild: bool = False
    evaluate_on_test: bool = False
    prune: PruneConfig = field(default_factory=PruneConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    qat_epochs: int = 1
    seed: int = 0
    # The out-of-distribution score each artifact carries, and the share of validation slices
    # its threshold may flag (training.trust).
    ood_method: str = "mahalanobis"
    ood_false_flag_rate: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        if self.ood_method not in OOD_METHODS:
            raise ConfigError(f"ood_method must be one of {', '.join(OOD_METHODS)}, got "
                              f"{self.ood_method!r}")
        if not 0.0 < self.ood_false_flag_rate < 0.5:
            raise ConfigError(f"ood_false_flag_rate must be in (0, 0.5), got "
                              f"{self.ood_false_flag_rate}")
        if self.out_dir is not None:
            object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.int8_io not in ("int8", "uint8"):
            raise ConfigError(f"int8_io must be int8 or uint8, got {self.int8_io!r}")
        if self.calibration_size < self.min_calibration_size:
            raise ConfigError(f"calibration_size must be >= {self.min_calibration_size}, "
                              f"got {self.calibration_size}")
        if not 7 <= self.onnx_opset <= 21:
            raise ConfigError(f"onnx_opset must be in 7..21, got {self.onnx_opset}")
        if not 0.0 <= self.tolerance < 1.0:
            raise ConfigError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if self.qat_epochs < 1:
            raise ConfigError("qat_epochs must be >= 1")
        if not self.variants:
            raise ConfigError("no variants selected")

    @property
    def output(self) -> Path:
        return self.out_dir or self.run_dir / "optimized"

    def settings_digest(self) -> str:
        """The sha256 of every setting that shapes an artifact or its verdict.

        Not the variant list, the output folder or what to do with failures: a run resumed
        with ``--variant`` or ``--allow-failures`` keeps what the first one built.
        """
        settings = {k: v for k, v in self.to_dict().items()
                    if k not in ("run_dir", "out_dir", "variants", "allow_failures", "rebuild")}
        blob = json.dumps(settings, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        data["out_dir"] = str(self.output)
        data["variants"] = [v.name for v in self.variants]
        return data
