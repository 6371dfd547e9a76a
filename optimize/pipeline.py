"""``brainedge optimize``: every deployable variant of a trained run, each checked and described.

For each requested variant: build its Keras source (the trained model, a pruned or a
quantization-aware copy, each built once), convert it, write it atomically with its manifest,
load it in its own runtime and compare it with the float32 parent on the validation split.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainedge.errors import BrainEdgeError, ShapeMismatchError
from brainedge.manifest import Manifest, atomic_path, hash_files, write_json, write_manifest
from optimize.config import ALL_VARIANTS, Format, OptimizeConfig, QuantApproach, Source, Variant
from optimize.parent import Parent
from optimize.validate import FAILED, PASSED, Parity, compare
from training.pipeline import predict_prepared
from training.trust import TrustFit, classifier_weights, fit_trust

log = logging.getLogger(__name__)

ERROR = "error"
SUFFIX = {Format.TFLITE: "tflite", Format.ONNX: "onnx"}


@dataclass
class ArtifactResult:
    variant: Variant
    status: str  # passed | failed | error
    path: Path | None = None
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"variant": self.variant.name, "source": self.variant.source.value,
                "format": self.variant.format.value, "precision": self.variant.approach.value,
                "status": self.status, "path": str(self.path) if self.path else None,
                "error": self.error, **self.metrics}


@dataclass(frozen=True)
class Summary:
    out_dir: Path
    results: tuple[ArtifactResult, ...]
    markdown: str

    @property
    def ok(self) -> bool:
        return all(r.status == PASSED for r in self.results)


class _Sources:
    """The Keras model behind each variant source, built once and only when asked for.

    A fine-tuned source is saved beside the variants as soon as it is built (source_cache), and
    a later run with the same parent and settings loads it instead of training again.
    """

    def __init__(self, parent: Parent, config: OptimizeConfig) -> None:
        self.parent, self.config = parent, config
        self._models: dict[Source, Any] = {Source.BASE: parent.model}
        self.notes: dict[Source, dict[str, Any]] = {}

    def get(self, source: Source) -> Any:
        from optimize.finetune_backup import backup_dir, clear_backup
        from optimize.source_cache import CACHE_DIR, load_source, save_source, source_key

        if source not in self._models:
            key = source_key(source, self.parent.reference["manifest_sha256"], self.config)
            saved = None if self.config.rebuild else load_source(self.config.output, key)
            if saved is not None:
                log.info("%s model: fine-tuned by an earlier run, loaded from %s", source.value,
                         self.config.output / CACHE_DIR)
                self._models[source], self.notes[source] = saved
                return self._models[source]
            start = time.monotonic()
            sources_dir = self.config.output / CACHE_DIR
            if self.config.rebuild:
                clear_backup(sources_dir, source.value)  # --rebuild trusts no earlier epoch
            self._models[source] = self._build(source, backup_dir(sources_dir, key))
            self.notes.setdefault(source, {})["build_seconds"] = time.monotonic() - start
            save_source(self.config.output, key, self._models[source], self.notes[source])
            clear_backup(sources_dir, source.value)
        return self._models[source]

    def _build(self, source: Source, backup: Path) -> Any:
        from optimize.cluster import cluster_model, describe
        from optimize.prune import prune_model, xnnpack_latency_policy
        from optimize.qat import quantize_aware

        p, c = self.parent, self.config
        n = len(p.class_names)
        if source is Source.PRUNED:
            return prune_model(p.model, p.train, p.val, p.spec, n, c.prune, seed=c.seed,
                               backup=backup)
        if source is Source.PRUNED_2_4:
            ok, reason = xnnpack_latency_policy(p.model)
            self.notes[source] = {"xnnpack_latency_policy": ok,
                                  "xnnpack_latency_policy_reason": reason}
            return prune_model(p.model, p.train, p.val, p.spec, n, c.prune, m_by_n=(2, 4),
                               seed=c.seed, backup=backup)
        if source is Source.PRUNED_CLUSTERED:
            pruned = self.get(Source.PRUNED)
            self.notes[source] = describe(c.cluster)
            return cluster_model(pruned, p.train, p.val, p.spec, n, c.cluster, seed=c.seed,
                                 backup=backup)
        if source is Source.QAT:
            return quantize_aware(p.model, p.train, p.val, p.spec, n, epochs=c.qat_epochs,
                                  learning_rate=c.prune.learning_rate,
                                  batch_size=c.prune.batch_size, seed=c.seed, backup=backup)
        raise AssertionError(source)


def _convert(variant: Variant, model: Any, calibration: Any, config: OptimizeConfig,
             onnx_cache: dict[int, bytes]) -> bytes:
    from optimize import convert

    # Every artifact also outputs its penultimate features, for its out-of-distribution score.
    exported = convert.with_features(model)
    if variant.format is Format.TFLITE:
        return convert.to_tflite(exported, variant.approach, calibration, config.int8_io)
    key = id(model)
    if key not in onnx_cache:
        onnx_cache[key] = convert.to_onnx(exported, config.onnx_opset)
    fp32 = onnx_cache[key]
    if variant.approach is QuantApproach.FP32:
        return fp32
    if variant.approach is QuantApproach.FP16:
        return convert.onnx_to_fp16(fp32)
    if variant.approach is QuantApproach.INT8:
        return convert.onnx_to_int8(fp32, calibration)
    raise BrainEdgeError(f"{variant.name}: ONNX has no {variant.approach.value} variant")


def _write_artifact(out_dir: Path, variant: Variant, blob: bytes) -> Path:
    """Write into a staging folder and swap it in: an old or half-written variant never lingers."""
    final = out_dir / variant.name
    staging = Path(tempfile.mkdtemp(prefix=f".{variant.name}.", dir=out_dir))
    (staging / f"model.{SUFFIX[variant.format]}").write_bytes(blob)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final / f"model.{SUFFIX[variant.format]}"


def _sizes(blob: bytes, reference: int | None) -> dict[str, Any]:
    gz = len(gzip.compress(blob, compresslevel=9))
    return {"size_bytes": len(blob), "gzip_bytes": gz,
            "size_ratio": len(blob) / reference if reference else None,
            "gzip_ratio": gz / reference if reference else None}


def _manifest(parent: Parent, variant: Variant, path: Path, predictor: Any,
              metrics: dict[str, Any], notes: dict[str, Any], trust: TrustFit,
              settings_digest: str) -> Manifest:
    from dataclasses import asdict

    trust_files, trust_extra = trust.write(path.parent)
    return Manifest(
        model=parent.manifest.model,
        format=variant.format.value,
        precision=variant.approach.value,
        input_spec=asdict(predictor.input_spec),
        class_names=parent.class_names,
        preprocessing=parent.spec.to_dict(),
        files=hash_files(path.parent, [path.name, *trust_files]),
        metrics=metrics,
        parent=str(parent.run_dir),
        extra={"variant": variant.name, "source": variant.source.value,
               "parent_manifest": parent.reference, "optimize_settings_sha256": settings_digest,
               "output_spec": asdict(predictor.output_spec),
               "feature_spec": asdict(predictor.feature_spec),
               "runtime": {"name": predictor.name, "version": predictor.version},
               **trust_extra, **notes},
    )


def optimize_run(config: OptimizeConfig, data: Path | None = None,
                 progress: Callable[[str], None] = log.info) -> Summary:
    from optimize.calibration import CalibrationSet
    from optimize.parent import load_parent
    from optimize.prune import sparsity_report
    from runtime import get_predictor

    parent = load_parent(config.run_dir, data, with_test=config.evaluate_on_test)
    out_dir = config.output
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "optimize_config.json", config.to_dict())
    calibration = CalibrationSet.from_prepared(parent.train, parent.spec, config.calibration_size,
                                               config.seed, config.min_calibration_size)
    n_classes = len(parent.class_names)
    splits = {"val": parent.val, **({"test": parent.test} if parent.test else {})}
    parent_probs = {name: predict_prepared(parent.model.predict_on_batch, data_, parent.spec,
                                      n_classes) for name, data_ in splits.items()}
    sources, onnx_cache = _Sources(parent, config), {}
    requested, digest = {v.name for v in config.variants}, config.settings_digest()
    # Variants made earlier from this same parent stay in the summary: `--variant X` adds X to
    # the folder rather than hiding its neighbours.
    built = _built_earlier(out_dir, parent)
    earlier = [r for r, _ in built if r.variant.name not in requested]
    # Requested variants already built with these settings are kept: a stopped run resumes.
    kept = {} if config.rebuild else {
        r.variant: r for r, manifest in built
        if r.variant.name in requested
        and manifest.extra.get("optimize_settings_sha256") == digest}
    results: list[ArtifactResult] = []
    reference_size: int | None = next(
        (r.metrics.get("size_bytes") for r in [*earlier, *kept.values()]
         if r.variant == Variant(Source.BASE, Format.TFLITE, QuantApproach.FP32)), None)

    for variant in sorted(config.variants, key=lambda v: (v.source is not Source.BASE,
                                                          v.format is not Format.TFLITE)):
        if variant in kept:
            results.append(kept[variant])
            progress(f"{variant.name}: {kept[variant].status}, kept: built earlier from this "
                     f"parent with the same settings (--rebuild builds it again)")
            markdown = _summarize(out_dir, parent, [*earlier, *results], config.tolerance)
            continue
        progress(f"{variant.name}: building")
        try:
            model = sources.get(variant.source)
            start = time.monotonic()
            blob = _convert(variant, model, calibration, config, onnx_cache)
            seconds = time.monotonic() - start
            if variant == Variant(Source.BASE, Format.TFLITE, QuantApproach.FP32):
                reference_size = len(blob)
            path = _write_artifact(out_dir, variant, blob)
            predictor = get_predictor(path)
            parity: dict[str, Parity] = {}
            for name, data_ in splits.items():
                probs = predict_prepared(predictor.predict, data_, parent.spec, n_classes)
                parity[name] = compare(probs, parent_probs[name], data_.labels,
                                       parent.class_names, config.tolerance, name)
            status = PASSED if all(p.status == PASSED for p in parity.values()) else FAILED
            sparsity = sparsity_report(model)
            metrics = {
                **_sizes(blob, reference_size), "convert_seconds": seconds,
                "params": int(sparsity["params"]), "sparsity": sparsity["sparsity"],
                **{f"{name}_{k}": v for name, p in parity.items() for k, v in p.to_dict().items()
                   if k not in ("split", "tolerance", "status")},
                "tolerance": config.tolerance, "status": status,
            }
            notes = sources.notes.get(variant.source, {})
            # Fitted on this artifact's own outputs: an int8 model gets its own temperature.
            trust = fit_trust(predictor.predict_with_features, parent.train, parent.val,
                              parent.spec, classifier_weights(model), config.ood_method,
                              config.ood_false_flag_rate, seed=config.seed)
            metrics["temperature"] = trust.temperature
            write_manifest(path.parent, _manifest(parent, variant, path, predictor, metrics,
                                                  notes, trust, digest))
            results.append(ArtifactResult(variant, status, path, None, {**metrics, **notes}))
            progress(f"{variant.name}: {status}, val accuracy {parity['val'].accuracy:.4f} "
                     f"(parent {parity['val'].parent_accuracy:.4f}), {len(blob) / 1e6:.2f} MB")
        except ShapeMismatchError:
            raise  # a model that answers in the wrong shape is a bug, not a weak variant
        except BrainEdgeError as exc:
            log.error("%s: %s", variant.name, exc)
            results.append(ArtifactResult(variant, ERROR, None, str(exc)))
        # Rewritten after every variant: an interrupted run still leaves a summary of its work.
        markdown = _summarize(out_dir, parent, [*earlier, *results], config.tolerance)
    # The gate judges what this run built; earlier variants are listed, not re-judged.
    return Summary(out_dir, tuple(results), markdown)


def _built_earlier(out_dir: Path, parent: Parent) -> list[tuple[ArtifactResult, Manifest]]:
    """Intact variants already in ``out_dir`` that were made from this parent's manifest."""
    from brainedge.manifest import load_manifest

    found = []
    for variant in ALL_VARIANTS:
        folder = out_dir / variant.name
        if not (folder / "manifest.json").is_file():
            continue
        try:
            manifest = load_manifest(folder)
        except BrainEdgeError as exc:
            log.warning("%s: not listed in the summary: %s", variant.name, exc)
            continue
        made_from = manifest.extra.get("parent_manifest", {}).get("manifest_sha256")
        if made_from == parent.reference["manifest_sha256"]:
            found.append((ArtifactResult(variant, manifest.metrics.get("status", ERROR),
                                         folder / next(iter(manifest.files)),
                                         None, dict(manifest.metrics)), manifest))
    return found


COLUMNS = [
    ("variant", "Variant"), ("size_bytes", "Size (MB)"), ("size_ratio", "vs TFLite FP32"),
    ("gzip_bytes", "gzip (MB)"), ("gzip_ratio", "gzip vs TFLite FP32"),
    ("sparsity", "Sparsity"), ("val_accuracy", "Val acc."), ("val_drop", "Drop"),
    ("val_macro_f1", "Macro-F1"), ("val_agreement", "Top-1 agreement"), ("status", "Status"),
]


def _summarize(out_dir: Path, parent: Parent, results: list[ArtifactResult],
               tolerance: float) -> str:
    from training.reports import markdown_table

    results = sorted(results, key=lambda r: ALL_VARIANTS.index(r.variant))
    records = [r.row() for r in results]  # summary.json keeps bytes; the table shows MB
    rows = []
    for record in records:
        row = dict(record)
        for key in ("size_bytes", "gzip_bytes"):
            if row.get(key) is not None:
                row[key] = row[key] / 1e6
        rows.append(row)
    has_test = any("test_accuracy" in r for r in rows)
    columns = COLUMNS + ([("test_accuracy", "Test acc."), ("test_drop", "Test drop")]
                         if has_test else [])
    val_n = next((r["val_n"] for r in rows if r.get("val_n")), len(parent.val))
    lines = [
        f"# Optimized variants of {parent.manifest.model} ({parent.run_dir})", "",
        f"Parent: float32 Keras, validation accuracy "
        f"{next((r['val_parent_accuracy'] for r in rows if 'val_parent_accuracy' in r), 0):.4f}"
        f" on {val_n} images. A variant fails when its accuracy drops more than "
        f"{tolerance * 100:.1f} points below it.",
        "Sizes are compared with the float32 TFLite file; gzip shows what pruning saves.", "",
        markdown_table(rows, columns), "",
    ]
    notes = {r.variant.source.value: r.metrics.get("xnnpack_latency_policy_reason")
             for r in results if r.metrics.get("xnnpack_latency_policy") is False}
    for source, reason in notes.items():
        lines.append(f"- `{source}`: TFMOT's XNNPack latency policy does not apply to this "
                     f"model ({reason}); its 2:4 sparsity saves size, not latency.")
    for r in results:
        if r.status == ERROR:
            lines.append(f"- `{r.variant.name}` could not be built: {r.error}")
    markdown = "\n".join(lines).rstrip() + "\n"
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(markdown)
    write_json(out_dir / "summary.json", {"run_dir": str(parent.run_dir), "variants": records})
    return markdown
