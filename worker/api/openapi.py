"""An OpenAPI 3 document of what a worker serves, at ``GET /openapi.json``.

Built from the Open Inference Protocol's REST specification and KServe's V1, for the models
this worker serves (their names, their datatypes), so that a tool such as schemathesis can
generate requests from it and check every answer: documented status codes, JSON bodies, and
``{"error": "..."}`` for every refusal.
"""

from __future__ import annotations

from typing import Any

from ..models import Model
from ..models.base import DATATYPES

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "minLength": 1}},
    "additionalProperties": False,
}
TENSOR_METADATA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
REQUEST_INPUT = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
REQUEST_OUTPUT = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
RESPONSE_OUTPUT = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _refusals(*, not_ready: bool = False) -> dict[str, Any]:
    responses = {"4XX": _json(ERROR, "refused: the reason, in one line")}
    if not_ready:
        responses["503"] = _json({"type": "object"}, "draining: not ready")
    return responses


def _get(
    summary: str, schema: dict[str, Any], parameters: list[dict[str, Any]], not_ready: bool = False
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {"200": _json(schema, summary), **_refusals(not_ready=not_ready)},
        }
    }


def document(models: list[Model]) -> dict[str, Any]:
    """The OpenAPI document of a worker serving ``models``."""
    # A served model's name, or any string (answered 404): a fuzzer tries both.
    names = {"anyOf": [{"type": "string", "enum": [m.name for m in models]}, {"type": "string"}]}
    model = {"name": "model_name", "in": "path", "required": True, "schema": names}
    version = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
    metadata = {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": TENSOR_METADATA},
            "outputs": {"type": "array", "items": TENSOR_METADATA},
        },
    }
    infer = {
        "post": {
            "summary": "inference",
            "parameters": [model],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["inputs"],
                            "properties": {
                                "id": {"type": "string"},
                                "parameters": {"type": "object"},
                                "inputs": {"type": "array", "items": REQUEST_INPUT},
                                "outputs": {"type": "array", "items": REQUEST_OUTPUT},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["model_name", "outputs"],
                        "properties": {
                            "model_name": {"type": "string"},
                            "model_version": {"type": "string"},
                            "id": {"type": "string"},
                            "outputs": {"type": "array", "items": RESPONSE_OUTPUT},
                        },
                    },
                    "the outputs",
                ),
                **_refusals(),
            },
        }
    }
    versioned_infer = {"post": {**infer["post"], "parameters": [model, version]}}
    stats = {"type": "object", "required": ["model_stats"], "properties": {"model_stats": {"type": "array"}}}
    ready = {"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}
    predict = {
        "post": {
            "summary": "KServe V1 predict",
            "parameters": [model],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["instances"],
                            "properties": {"instances": {"type": "array"}},
                        }
                    }
                },
            },
            "responses": {
                "200": _json({"type": "object", "required": ["predictions"]}, "the predictions"),
                **_refusals(),
            },
        }
    }
    index = {
        "post": {
            "summary": "the model repository index: every model version served",
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {"schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "version", "state"],
                            "properties": {
                                "name": {"type": "string"},
                                "version": {"type": "string"},
                                "state": {"type": "string"},
                                "reason": {"type": "string"},
                            },
                        },
                    },
                    "the index",
                ),
                **_refusals(),
            },
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "inference-supervisor worker",
            "version": "1",
            "description": f"Serving: {', '.join(m.name for m in models)}",
        },
        "paths": {
            "/": _get("KServe V1 liveness", {"type": "object", "required": ["status"]}, []),
            "/v2": _get("server metadata", {"type": "object", "required": ["name", "version", "extensions"]}, []),
            "/v2/health/live": _get("liveness", {"type": "object", "required": ["live"]}, []),
            "/v2/health/ready": _get("readiness", {"type": "object", "required": ["ready"]}, [], not_ready=True),
            "/v2/models/stats": _get("statistics of every model", stats, []),
            "/v2/models/{model_name}": _get("model metadata", metadata, [model]),
            "/v2/models/{model_name}/versions/{model_version}": _get("model metadata", metadata, [model, version]),
            "/v2/models/{model_name}/ready": _get("model readiness", ready, [model], not_ready=True),
            "/v2/models/{model_name}/versions/{model_version}/ready": _get(
                "model version readiness", ready, [model, version], not_ready=True
            ),
            "/v2/models/{model_name}/config": _get("Triton model configuration", {"type": "object"}, [model]),
            "/v2/models/{model_name}/versions/{model_version}/config": _get(
                "Triton model configuration of a version", {"type": "object"}, [model, version]
            ),
            "/v2/models/{model_name}/stats": _get("model statistics", stats, [model]),
            "/v2/models/{model_name}/versions/{model_version}/stats": _get(
                "model version statistics", stats, [model, version]
            ),
            "/v2/repository/index": index,
            "/v2/models/{model_name}/infer": infer,
            "/v2/models/{model_name}/versions/{model_version}/infer": versioned_infer,
            "/v1/models": _get("model list", {"type": "object", "required": ["models"]}, []),
            "/v1/models/{model_name}": _get("model readiness (V1)", ready, [model], not_ready=True),
            "/v1/models/{model_name}:predict": predict,
        },
    }
