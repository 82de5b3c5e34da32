"""Write the OpenAPI schema that `cog build` bakes into an image, for local runs of the Cog server.

cog 0.23's server (coglet) validates prediction inputs and offers SSE streaming only
when ``.cog/openapi_schema.json`` exists; `cog build` writes it with the Go CLI's static
generator, which pip's ``cog`` package does not ship. This builds the same document
from cog's own Python introspection (``cog._inspector.create_predictor`` and the
``json_type()`` of its field types): the ``Input`` component with titles, ``x-order``,
defaults, bounds and choices (as ``$ref`` enums, as the Go generator emits them), the
``Output`` component, and ``x-cog-streaming`` on ``POST /predictions`` when ``run`` is
decorated with ``@streaming``.

``openapi_schema(ref, static=True)`` takes the ``Input`` component from the static reading
instead (tests/_cog_static.py: cog's own parser rules, what `cog build` bakes); the Cog
server tests serve that one, and tests/test_cog_static.py checks the two agree.

Usage: ``python tests/_cog_schema.py predict.py:Runner > .cog/openapi_schema.json``
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path


def _number(x: float):
    return int(x) if float(x).is_integer() else x


def openapi_schema(ref: str = "predict.py:Runner", project: Path | None = None, *, static: bool = False,
                   mode: str = "predict") -> dict:
    from cog import _adt as adt
    from cog._inspector import create_predictor

    module_file, cls_name = ref.split(":")
    project = Path(project or Path.cwd()).resolve()
    module_name = Path(module_file).stem
    module_dir = str((project / module_file).parent)
    sys.path.insert(0, module_dir)
    try:
        info = create_predictor(module_name, cls_name)
        source = inspect.getsource(getattr(importlib.import_module(module_name), cls_name))
    finally:
        sys.path.remove(module_dir)

    components: dict = {}
    properties: dict = {}
    required: list[str] = []
    for name, field in sorted(info.inputs.items(), key=lambda kv: kv[1].order):
        # as cog's openapi_spec.go: Go's TitleCase ("load_in_4bit" → "Load In 4bit"), no title beside
        # choices' allOf, and a None default of a nullable input written as null
        prop: dict = {"x-order": field.order}
        if field.choices is None:
            prop["title"] = " ".join(p[:1].upper() + p[1:] for p in name.split("_"))
        if field.choices is not None:
            enum_type = field.type.primitive.json_type()
            components[name] = {"title": name, "description": "An enumeration.", "enum": list(field.choices),
                                **enum_type}
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop.update(field.type.json_type())
        if field.description:
            prop["description"] = field.description
        if field.default is not None:
            prop["default"] = field.default
        if field.ge is not None:
            prop["minimum"] = _number(field.ge)
        if field.le is not None:
            prop["maximum"] = _number(field.le)
        if field.min_length is not None:
            prop["minLength"] = field.min_length
        if field.max_length is not None:
            prop["maxLength"] = field.max_length
        if field.regex is not None:
            prop["pattern"] = field.regex
        optional = field.type.repetition in (adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED)
        if optional:
            prop["nullable"] = True
            if field.default is None:
                prop["default"] = None
        if field.default is None and not optional:
            required.append(name)
        properties[name] = prop

    input_schema: dict = {"type": "object", "title": "Input", "properties": properties}
    if required:
        input_schema["required"] = required
    if static:
        from _cog_static import input_schema as static_input_schema, read_entry

        input_schema, components = static_input_schema(read_entry(project / module_file, cls_name, mode))
    post: dict = {"summary": "Predict", "operationId": "predict_predictions_post"}
    if "@streaming" in source or "@cog.streaming" in source:
        post["x-cog-streaming"] = True
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {
            "/predictions": {"post": post},
            "/predictions/{prediction_id}": {"put": {"summary": "Predict Idempotent"}},
            "/predictions/{prediction_id}/cancel": {"post": {"summary": "Cancel"}},
        },
        "components": {"schemas": {"Input": input_schema, "Output": info.output.json_type(), **components}},
    }


def write_schema(project: Path, ref: str = "predict.py:Runner") -> Path:
    """The schema `cog build` would bake: its Input component read statically, as cog does."""
    path = Path(project) / ".cog" / "openapi_schema.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(openapi_schema(ref, project, static=True), indent=2, ensure_ascii=False),
                    encoding="utf-8")
    return path


if __name__ == "__main__":  # the schema `cog build` would bake
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(openapi_schema(sys.argv[1] if len(sys.argv) > 1 else "predict.py:Runner", static=True),
                     indent=2, ensure_ascii=False))
