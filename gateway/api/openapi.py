"""The OpenAPI 3.1 document of the device API, built from the same msgspec Structs that
decode the requests, so the two cannot drift apart. Served at /v1/openapi.json.

`ROUTES` is the list of operations; a test checks it against the aiohttp router. This
module depends only on msgspec and the API schemas.
"""

from __future__ import annotations

import functools

import msgspec

import gateway
from gateway.api import schemas

_REF = "#/components/schemas/{name}"

_ERRORS = {
    "400": "A bad body; the message starts with the path of the field at fault.",
    "401": "Missing or wrong bearer token.",
    "404": "No such instance (erased, expired or replaced).",
    "409": "The instance is being erased.",
    "409 create": "A create for the same app, aor and device is still in flight.",
    "413": "The body is larger than the configured max_body_bytes.",
    "415": "The body is not application/json.",
    "429": "Over the app's rate limit; see Retry-After.",
    "503": "The gateway is busy; see Retry-After.",
}

# (method, path, summary, auth, request Struct, success status, response Struct, errors)
ROUTES = [
    ("post", "/v1/instances", "Create an instance, or replace the one of the same app, aor "
     "and device", "app_key", schemas.CreateInstance, "201", schemas.CreatedInstance,
     ("400", "401", "409 create", "413", "415", "429")),
    ("get", "/v1/instances/{id}", "The instance's state", "secret", None, "200",
     schemas.InstanceStatus, ("401", "404", "429")),
    ("patch", "/v1/instances/{id}", "Change the password, push targets or display name",
     "secret", schemas.UpdateInstance, "200", schemas.InstanceStatus,
     ("400", "401", "404", "409", "413", "415", "429")),
    ("delete", "/v1/instances/{id}", "Erase the instance now", "secret", None, "204", None,
     ("401", "404", "409", "429")),
    ("put", "/v1/instances/{id}/mode", "Foreground (the app registers itself) or background "
     "(the gateway registers)", "secret", schemas.SetMode, "200", schemas.InstanceStatus,
     ("400", "401", "404", "409", "413", "415", "429")),
    ("post", "/v1/instances/{id}/refresh", "The app was opened: extend the instance's life",
     "secret", None, "200", schemas.InstanceStatus, ("401", "404", "409", "429")),
    ("get", "/v1/instances/{id}/messages", "Stored SIP MESSAGEs waiting for the app, oldest "
     "first", "secret", None, "200", schemas.MessageList, ("401", "404", "429")),
    ("post", "/v1/instances/{id}/messages/ack", "Delete fetched messages (by id) once the app "
     "has them", "secret", schemas.AckMessages, "200", schemas.AckResult,
     ("400", "401", "404", "409", "413", "415", "429")),
    ("get", "/v1/openapi.json", "This document", None, None, "200", None, ()),
]


def _content(kind) -> dict:
    return {"application/json": {"schema": {"$ref": _REF.format(name=kind.__name__)}}}


def build() -> dict:
    kinds = {k for route in ROUTES for k in (route[4], route[6]) if k is not None}
    kinds.add(schemas.ErrorBody)
    _, components = msgspec.json.schema_components(
        sorted(kinds, key=lambda k: k.__name__), ref_template=_REF
    )
    paths: dict[str, dict] = {}
    for method, path, summary, auth, request, status, response, errors in ROUTES:
        operation: dict = {"summary": summary, "responses": {}}
        if "{id}" in path:
            operation["parameters"] = [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ]
        if auth:
            operation["security"] = [{auth: []}]
        if request is not None:
            operation["requestBody"] = {"required": True, "content": _content(request)}
        ok: dict = {"description": "Success"}
        if response is not None:
            ok["content"] = _content(response)
        elif path.endswith("openapi.json"):
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
        operation["responses"][status] = ok
        for code in errors:
            operation["responses"][code.split()[0]] = {
                "description": _ERRORS[code],
                "content": _content(schemas.ErrorBody),
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "sip-push-gateway device API", "version": gateway.__version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "app_key": {"type": "http", "scheme": "bearer", "description": "The app's API key."},
                "secret": {"type": "http", "scheme": "bearer",
                           "description": "The instance secret returned by the create."},
            },
        },
    }


@functools.cache
def openapi_document() -> bytes:
    """The document as JSON bytes (built once)."""
    return msgspec.json.encode(build())
