"""The OpenAPI 3.1 description of the JSON API, written by hand (a test checks that every
``/api`` route of the app is in it, and nothing else)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from brainedge import MEDICAL_NOTICE, __version__


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


_MODEL_PARAM = {
    "name": "model", "in": "query", "required": False,
    "description": "Name of a loaded artifact (GET /api/v1/models); default: the server's.",
    "schema": {"type": "string"},
}

_GRADCAM_PARAM = {
    "name": "gradcam", "in": "query", "required": False,
    "description": "1 to add gradcam_png_base64: a Grad-CAM heat map over the model's input, "
                   "computed by the float32 Keras model of the artifact's parent training run "
                   "for the predicted class (it explains the parent, not necessarily this "
                   "artifact). Needs the server's Grad-CAM setting and the parent run on the "
                   "server (see gradcam in GET /api/v1/models); otherwise the field is null "
                   "and gradcam_reason says why. Default 0: the PNG makes answers larger.",
    "schema": {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no", "on", "off"]},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "code", "status"],
        "properties": {
            "error": {"type": "string", "description": "What was wrong, for a person."},
            "code": {"type": "string", "examples": ["unreadable_image", "too_large"]},
            "status": {"type": "integer"},
            "request_id": {"type": ["string", "null"]},
        },
    },
    "Model": {
        "type": "object", "required": ["name", "model", "format", "precision", "backend"],
        "properties": {
            "name": {"type": "string", "examples": ["densenet121-tflite-int8"]},
            "model": {"type": "string"}, "variant": {"type": ["string", "null"]},
            "format": {"type": "string", "enum": ["tflite", "onnx", "keras"]},
            "precision": {"type": "string"}, "backend": {"type": "string"},
            "runtime_version": {"type": "string"}, "sha256": {"type": "string"},
            "image_size": {"type": "integer"},
            "class_names": {"type": "array", "items": {"type": "string"}},
            "gate": {"oneOf": [{"$ref": "#/components/schemas/Gate"}, {"type": "null"}]},
            "temperature": {"type": ["number", "null"],
                            "description": "The temperature its probabilities are calibrated "
                                           "at (fitted on the validation split); null: "
                                           "uncalibrated."},
            "probability_step": {
                "type": ["number", "null"],
                "description": "The resolution of an integer model's probabilities (its output "
                               "quantization step, 1/256 for int8): a class below one step "
                               "reads 0, so 1.0 means every other class scored below it, not "
                               "certainty. null: a float model."},
            "ood": {"type": ["object", "null"],
                    "description": "Its out-of-distribution score: method, threshold and "
                                   "false_flag_rate; null when it carries none.",
                    "properties": {"method": {"type": "string"},
                                   "threshold": {"type": "number"},
                                   "false_flag_rate": {"type": ["number", "null"]}}},
            "gradcam": {"type": "boolean",
                        "description": "GET /api/v1/models only: whether ?gradcam=1 can add a "
                                       "heat map to this artifact's answers."},
            "gradcam_reason": {"type": "string",
                               "description": "GET /api/v1/models only, when gradcam is false: "
                                              "why (setting off, parent run not on the "
                                              "server, ...)."},
        },
    },
    "Gate": {
        "type": "object", "required": ["status"],
        "description": "The artifact's parity gate (brainedge optimize): its accuracy against "
                       "the float32 model it was made from. An artifact that did not pass is "
                       "served only when the operator allowed it (BRAINEDGE_ALLOW_FAILED_GATE), "
                       "and then every answer carries gate_warning.",
        "properties": {
            "status": {"type": "string", "examples": ["passed", "failed"]},
            "drop_points": {"type": ["number", "null"],
                            "description": "Accuracy points below the parent (largest over "
                                           "the splits checked)."},
            "tolerance_points": {"type": ["number", "null"],
                                 "description": "The drop the gate allowed."},
        },
    },
    "Models": {
        "type": "object", "required": ["default", "models", "notice"],
        "properties": {
            "default": {"type": "string"},
            "models": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
            "notice": {"type": "string"},
        },
    },
    "OODScore": {
        "type": "object", "required": ["method", "score", "threshold", "flagged"],
        "description": "The learned out-of-distribution score of the answering artifact: "
                       "how far the slice's features lie from the training data (higher is "
                       "farther); flagged above the threshold set on the validation split.",
        "properties": {
            "method": {"type": "string", "enum": ["mahalanobis", "energy", "msp"]},
            "score": {"type": "number"},
            "threshold": {"type": "number"},
            "false_flag_rate": {"type": "number",
                                "description": "Share of validation slices above the "
                                               "threshold."},
            "flagged": {"type": "boolean"},
            "reason": {"type": ["string", "null"]},
        },
    },
    "OOD": {
        "type": "object", "required": ["flagged", "reasons", "rules_flagged", "score_flagged",
                                       "score"],
        "description": "Whether the input looks like a brain MRI slice at all; when flagged, "
                       "the prediction is about something the model was not made for.",
        "properties": {
            "flagged": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"},
                        "description": "Every check that fired, in plain words."},
            "rules_flagged": {"type": "boolean",
                              "description": "The image checks (colour, background, ...) fired."},
            "score_flagged": {"type": ["boolean", "null"],
                              "description": "The learned score fired; null when the artifact "
                                             "has no score."},
            "score": {"oneOf": [{"$ref": "#/components/schemas/OODScore"}, {"type": "null"}]},
            "model_uncertain": {"type": "boolean"},
            "model_note": {"type": ["string", "null"]},
            "measures": {"type": "object"},
        },
    },
    "Prediction": {
        "type": "object",
        "required": ["class", "confidence", "probabilities", "model", "gate", "timing_ms",
                     "ood", "notice"],
        "properties": {
            "class": {"type": "string", "examples": ["glioma"]},
            "confidence": {"type": "number"},
            "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
            "model": {"$ref": "#/components/schemas/Model"},
            "gate": {"oneOf": [{"$ref": "#/components/schemas/Gate"}, {"type": "null"}],
                     "description": "The answering artifact's parity gate; null for a "
                                    "training run, which has none."},
            "gate_warning": {"type": "string",
                             "description": "Only when the artifact did not pass its gate: "
                                            "a warning to show beside the answer."},
            "timing_ms": {"type": "object", "additionalProperties": {"type": "number"},
                          "description": "decode, ood_checks, preprocess, inference, total "
                                         "(of those), and gradcam when one was computed"},
            "ood": {"$ref": "#/components/schemas/OOD"},
            "input": {"type": "object", "properties": {
                "kind": {"type": "string", "enum": ["image", "dicom"]},
                "width": {"type": "integer"}, "height": {"type": "integer"}}},
            "notice": {"type": "string", "examples": [MEDICAL_NOTICE]},
            "request_id": {"type": "string"},
            "gradcam_png_base64": {
                "type": ["string", "null"], "contentEncoding": "base64",
                "contentMediaType": "image/png",
                "description": "Only with ?gradcam=1: an RGB PNG of the model's input size, the "
                               "parent's Grad-CAM for the predicted class over the input; null "
                               "when this artifact has none."},
            "gradcam_reason": {"type": "string",
                               "description": "Only with ?gradcam=1 and a null heat map: why."},
        },
    },
    "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
    "Ready": {
        "type": "object", "required": ["status", "problems"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "unavailable"]},
            "problems": {"type": "array", "items": {"type": "string"}},
            "models": {"type": "array", "items": {"type": "string"}},
            "default": {"type": "string"},
        },
    },
}


def openapi_document(max_upload_bytes: int, model_names: Sequence[str],
                     auth: bool) -> dict[str, Any]:
    limit_mb = f"{max_upload_bytes / (1024 * 1024):g}"
    secured = [{"bearerAuth": []}] if auth else []
    unauthorized = {"401": _error("A bearer token is required or wrong.")} if auth else {}
    binary = {"type": "string", "format": "binary"}
    predict = {
        "summary": "Classify one MRI slice",
        "description": (f"The file is decided by content (PNG, JPEG, BMP, single-page TIFF "
                        f"or single-frame DICOM), at most {limit_mb} MB. {MEDICAL_NOTICE}"),
        "operationId": "predict", "security": secured,
        "parameters": [_MODEL_PARAM, _GRADCAM_PARAM],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": binary, "model": {
                    "type": "string", "description": "Same as the query parameter."}}}},
            "application/octet-stream": {"schema": binary},
            "image/png": {"schema": binary}, "image/jpeg": {"schema": binary},
            "application/dicom": {"schema": binary},
        }},
        "responses": {
            "200": _json("The prediction, its timing and the out-of-distribution check.",
                         "Prediction"),
            "400": _error("No file, an empty file, an unknown model or a gradcam value "
                          "other than 0 or 1."),
            **unauthorized,
            "413": _error(f"The upload is larger than {limit_mb} MB."),
            "415": _error("Not a readable image: corrupt, truncated, another format (GIF, "
                          "WebP, ...), too many pixels, several images in one file (multi-page "
                          "TIFF, animated PNG or GIF, multi-frame DICOM) or DICOM without "
                          "pixel data."),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "BrainEdge", "version": __version__,
                 "description": "Brain-tumor MRI slice classification (glioma, meningioma, "
                                f"notumor, pituitary). {MEDICAL_NOTICE}"},
        "paths": {
            "/api/v1/predict": {"post": predict},
            "/api/v1/models": {"get": {
                "summary": "The artifacts this server loaded", "operationId": "listModels",
                "security": secured,
                "responses": {"200": _json(f"Loaded: {', '.join(model_names)}.", "Models"),
                              **unauthorized}}},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document", "operationId": "openapi", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1 document",
                                      "content": {"application/json": {}}}}}},
            "/healthz": {"get": {
                "summary": "The process is alive", "operationId": "healthz", "security": [],
                "responses": {"200": _json("Alive.", "Health")}}},
            "/readyz": {"get": {
                "summary": "Every artifact is loaded, verified and unchanged on disk",
                "operationId": "readyz", "security": [],
                "responses": {"200": _json("Ready.", "Ready"),
                              "503": _json("Not ready; problems says why.", "Ready")}}},
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
