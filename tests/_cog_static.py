"""Read a Cog entry point the way `cog build` / `cog push` do: statically, importing nothing.

Since cog 0.17 the OpenAPI schema baked into an image comes from a tree-sitter parser in
the Go CLI (replicate/cog ``pkg/schema/python/``), not from importing predict.py. This
module applies that parser's rules to the same files with Python's ``ast`` and reports,
besides what cog would fail on, every value it would silently drop or garble:

* ``read_entry(path, target, mode)`` → ``Reading``: the inputs as cog sees them (type,
  default, description, bounds, choices), whether ``run`` streams, and ``errors`` (a
  ``cog build`` failure) and ``problems`` (what builds but is lost or mangled).
* ``input_schema(reading)`` → the ``Input`` component and the enum components, as
  ``pkg/schema/openapi_spec.go`` ``buildInputSchema`` writes them.

The rules, with the file of cog's source each comes from:

target.go      predict mode: the class named in cog.yaml, at module top level; its own ``run``
               (the last ``def run`` of the body), else an inherited ``run`` from a parent
               class, else a legacy ``predict``. Train mode: ``Class.train`` or a top-level
               function with the target's name. Only that one method is read.
inputs.go      each parameter after ``self`` needs an annotation (else "has no type
               annotation"). Its default is, in this order: an inline call whose callee text
               is ``Input`` or a name imported as ``from cog import Input as X``; a
               ``Class.attr`` (class attribute assigned an ``Input(...)`` in a top-level
               class) or ``Class.method(...)`` (a method whose body returns one); a literal;
               a module-level name bound to a literal. Anything else — a module-level name
               bound to an ``Input(...)`` object, an expression, ``cog.Input(...)`` — is the
               build error "default `X` cannot be statically resolved".
               Inside ``Input(...)`` only keyword arguments count. ``default``: a literal
               or module-level literal name, else silently None. ``description``: a string
               literal or a module-level name bound to one, else dropped. ``ge``/``le``/
               ``min_length``/``max_length``: the argument's source text must parse with
               Go's ``strconv.ParseFloat`` ("1", "-1", "1e-7", "0.5"; not ``2**32 - 1``,
               ``_S.max_top_k``, ``1_000``, ``0xff``, ``(1)``, ``- 1``), else dropped.
               ``regex``/``accept``: a plain string literal. ``choices``: a list literal, a
               module-level list name, ``list(D.keys()/.values())`` of a module-level dict,
               or ``+`` of those, else the build error "choices expression cannot be
               statically resolved". ``deprecated``: ``True``/``False``. ``default_factory``
               is a build error.
literals.go    a string literal is the source text between its quotes, with NO escape
               processing: ``"a\\nb"`` keeps the backslash, a triple-quoted string keeps its
               newlines and indentation, an implicit concatenation ``"a " "b"`` becomes
               ``a " "b``, a raw triple-quoted string keeps two quotes each side; f-, b-, u- and
               upper-case-prefixed strings are not strings at all. Integers parse with
               Go's ``ParseInt(text, 0, 64)``, floats with ``ParseFloat``; a negative
               number is a ``unary_operator`` whose text (``-1``) must parse as a whole.
               In a tuple or dict, items that do not parse are skipped silently.
module_scope.go  module-level ``NAME = <literal>`` (also ``NAME: T = <literal>``) only.
imports.go     only top-level ``import``/``from … import`` statements; imports inside
               ``try:`` are invisible (types are matched by name, so that is harmless for
               ``Input``, ``Path`` and ``Secret``).
annotations.go, ../types.go  ``str int float bool Path File Secret Any dict`` by name
               (``cog.Path`` too); ``Optional[X]``, ``X | None``, ``Union[X, None]`` make a
               nullable input; ``list[X]``/``List[X]`` an array; ``Optional[list[X]]`` a
               nullable array; ``list[Optional[X]]`` and nested unions are errors; a union of
               two or more types may not hold ``Path``/``File``/``Secret`` or carry bounds.
               ``@streaming`` (from cog) needs an ``Iterator``/``ConcatenateIterator`` return.
../openapi_spec.go  per input: ``title`` (snake_case → Title Case), ``x-order``, type,
               ``default`` (a None default on a non-nullable type is dropped, making the
               input required — except a bare ``Secret``), ``nullable``, ``description``,
               ``minimum``/``maximum``/``minLength``/``maxLength``/``pattern``; choices become
               ``allOf: [{$ref}]`` to an enum component named after the input.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_MISSING = object()

# Go strconv.ParseFloat: decimal (optional sign, fraction, exponent), inf/infinity/nan, hex with a p exponent.
_GO_FLOAT = re.compile(
    r"[+-]?((\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|0[xX]([0-9a-fA-F_]+(\.[0-9a-fA-F_]*)?|\.[0-9a-fA-F_]+)[pP][+-]?\d+"
    r"|[iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)
# Go strconv.ParseInt(s, 0, 64): optional sign, decimal/0x/0o/0b, underscores allowed (base 0).
_GO_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|0[0-7_]*|[1-9][0-9_]*)")
PRIMITIVES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "Path",
              "File": "Path", "Secret": "Secret", "Any": "Any", "dict": "Any", "Dict": "Any"}
JSON_TYPES = {"string": {"type": "string"}, "integer": {"type": "integer"}, "number": {"type": "number"},
              "boolean": {"type": "boolean"}, "Path": {"type": "string", "format": "uri"},
              "Secret": {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True},
              "Any": {"type": "object"}}


class CogBuildError(Exception):
    """What `cog build` would stop on."""


@dataclass
class InputType:
    kind: str  # a PRIMITIVES value, or "array"
    nullable: bool = False
    elem: "InputType | None" = None

    def json(self) -> dict:
        if self.kind == "array":
            out = {"type": "array", "items": self.elem.json() if self.elem else {"type": "object"}}
        else:
            out = dict(JSON_TYPES[self.kind])
        if self.nullable:
            out["nullable"] = True
        return out


@dataclass
class Field:
    name: str
    order: int
    type: InputType
    default: Any = _MISSING  # _MISSING: no default; None: a None default
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list | None = None
    deprecated: bool | None = None


@dataclass
class Reading:
    path: Path
    target: str
    fields: list[Field] = field(default_factory=list)
    streaming: bool = False
    is_async: bool = False
    problems: list[str] = field(default_factory=list)  # builds, but a value is lost or mangled

    def by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}


# ------------------------------------------------------------------------------------ literals
class _Source:
    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self._offsets = [0]
        for line in self.lines:
            self._offsets.append(self._offsets[-1] + len(line.encode("utf-8")))
        self.raw = text.encode("utf-8")

    def seg(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or ""

    def _pos(self, line: int, col: int) -> int:
        return self._offsets[line - 1] + col

    def between(self, a_line: int, a_col: int, node: ast.AST) -> str:
        """Source text from (a_line, a_col) up to the start of ``node``."""
        return self.raw[self._pos(a_line, a_col):self._pos(node.lineno, node.col_offset)].decode("utf-8")


def _string_tokens(text: str) -> list[str]:
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
                if t.type == tokenize.STRING or t.type == getattr(tokenize, "FSTRING_START", -1)]
    except (tokenize.TokenError, SyntaxError):
        return []


def go_string_literal(text: str) -> tuple[bool, str]:
    """literals.go parseStringLiteral on a node's source text: the text between the quotes, unescaped."""
    if text.startswith(('"""', "'''")):
        return (True, text[3:-3]) if len(text) >= 6 else (False, "")
    if text.startswith(('"', "'")):
        return (True, text[1:-1]) if len(text) >= 2 else (False, "")
    if text.startswith(('r"', "r'")):
        return (True, text[2:-1]) if len(text) >= 3 else (False, "")
    return False, ""


class _Reader:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.src = _Source(self.path.read_text(encoding="utf-8"))
        self.tree = ast.parse(self.src.text, filename=str(path))
        self.imports = self._imports()
        self.scope = self._module_scope()
        self.problems: list[str] = []

    # -- imports.go / module_scope.go ----------------------------------------------------------
    def _imports(self) -> dict[str, tuple[str, str]]:
        names: dict[str, tuple[str, str]] = {}
        for node in self.tree.body:  # top level only: not inside try/if
            if isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    names[a.asname or a.name] = (node.module, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    names[a.asname or a.name] = (a.name, a.name)
        return names

    def _module_scope(self) -> dict[str, Any]:
        scope: dict[str, Any] = {}
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            ok, val = self.literal(value, note=None)
            if ok:
                scope[target.id] = val
            else:
                scope.pop(target.id, None)
        return scope

    # -- literals.go -------------------------------------------------------------------------------
    def literal(self, node: ast.AST, note: str | None) -> tuple[bool, Any]:
        """parseDefaultValue. ``note``: where to report a value that parses but differs from Python's."""
        text = self.src.seg(node)
        if isinstance(node, ast.Constant):
            v = node.value
            if v is None or isinstance(v, bool):
                return True, v
            if isinstance(v, int):
                if not _GO_INT.fullmatch(text) or not -(2**63) <= v < 2**63:
                    return False, None
                return True, v
            if isinstance(v, float):
                return (True, v) if _GO_FLOAT.fullmatch(text) else (False, None)
            if isinstance(v, str):
                return self.string(node, note)
            return False, None
        if isinstance(node, ast.JoinedStr):
            return False, None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            stripped = text.strip()
            if _GO_INT.fullmatch(stripped):
                return True, int(stripped.replace("_", ""), 0)
            if _GO_FLOAT.fullmatch(stripped):
                return True, float(stripped)
            return False, None
        if isinstance(node, (ast.List, ast.Set)):
            items = []
            for elt in node.elts:
                ok, v = self.literal(elt, note)
                if not ok:
                    return False, None
                items.append(v)
            return True, items
        if isinstance(node, ast.Tuple):
            items = []
            for elt in node.elts:
                ok, v = self.literal(elt, note)
                if ok:
                    items.append(v)
                elif note:
                    self.problems.append(f"{note}: tuple item `{self.src.seg(elt)}` is dropped by cog")
            return True, items
        if isinstance(node, ast.Dict):
            out = {}
            for k, v in zip(node.keys, node.values):
                ok1, kv = self.literal(k, note) if k is not None else (False, None)
                ok2, vv = self.literal(v, note)
                if ok1 and ok2:
                    out[kv] = vv
                elif note:
                    self.problems.append(f"{note}: dict item is dropped by cog")
            return True, out
        return False, None

    def string(self, node: ast.AST, note: str | None) -> tuple[bool, str]:
        """parseStringLiteral; a value that differs from Python's is reported as garbled."""
        text = self.src.seg(node)
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            return False, ""
        ok, value = go_string_literal(text)
        if not ok:
            return False, ""
        if value != node.value and note:
            how = ("implicitly concatenated strings" if len(_string_tokens(text)) > 1
                   else "escape sequences or a raw triple-quoted string")
            self.problems.append(f"{note}: garbled by cog ({how}): cog reads {value!r}, Python {node.value!r}")
        return True, value

    def number(self, node: ast.AST) -> float | None:
        """parseNumberLiteral: the argument's source text through Go's ParseFloat."""
        text = self.src.seg(node).strip()
        return float(text) if _GO_FLOAT.fullmatch(text) else None

    def resolve_default(self, node: ast.AST, note: str | None) -> tuple[bool, Any]:
        """module_scope.go resolveDefaultExpr: a literal, or a module-level name bound to one."""
        ok, v = self.literal(node, note)
        if ok:
            return True, v
        if isinstance(node, ast.Name) and node.id in self.scope:
            return True, self.scope[node.id]
        return False, None

    # -- inputs.go ---------------------------------------------------------------------------------
    def is_input_call(self, node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        name = self.src.seg(node.func)
        return name == "Input" or self.imports.get(name) == ("cog", "Input")

    def parse_input_call(self, call: ast.Call, param: str) -> dict[str, Any]:
        """parseInputCall: the keyword values cog keeps."""
        info: dict[str, Any] = {}
        where = f"{self.path.name}: input '{param}'"
        for kw in call.keywords:
            if kw.arg is None:
                continue
            v = kw.value
            # tree-sitter keeps parentheses as a node of their own, which no rule accepts
            wrapped = "(" in self.src.between(kw.lineno, kw.col_offset + len(kw.arg), v)
            note = f"{where}: {kw.arg}"
            if kw.arg == "default":
                ok, val = (False, None) if wrapped else self.resolve_default(v, note)
                if not ok:
                    self.problems.append(f"{note}=`{self.src.seg(v)}` is not a literal: cog uses None instead")
                info["default"] = val if ok else None
            elif kw.arg == "default_factory":
                raise CogBuildError(f"parameter '{param}': default_factory is not supported in static schema generation")
            elif kw.arg == "description":
                ok, s = (False, "") if wrapped else self.string(v, note)
                if not ok and isinstance(v, ast.Name) and isinstance(self.scope.get(v.id), str):
                    ok, s = True, self.scope[v.id]
                if ok:
                    info["description"] = s
                else:
                    self.problems.append(f"{note}=`{self.src.seg(v)[:60]}` is not a plain string literal: cog drops it")
            elif kw.arg in ("ge", "le", "min_length", "max_length"):
                n = None if wrapped else self.number(v)
                if n is None:
                    self.problems.append(f"{note}=`{self.src.seg(v)}` is not a number literal: cog drops the bound")
                else:
                    info[kw.arg] = int(n) if kw.arg.endswith("length") else n
            elif kw.arg in ("regex", "accept"):
                ok, s = (False, "") if wrapped else self.string(v, note)
                if ok:
                    info[kw.arg] = s
                else:
                    self.problems.append(f"{note}=`{self.src.seg(v)}` is not a plain string literal: cog drops it")
            elif kw.arg == "choices":
                items = None if wrapped else self.choices(v, note)
                if items is None:
                    raise CogBuildError(f"parameter '{param}': choices expression cannot be statically resolved")
                info["choices"] = items
            elif kw.arg == "deprecated":
                if isinstance(v, ast.Constant) and isinstance(v.value, bool) and not wrapped:
                    info["deprecated"] = v.value
                else:
                    self.problems.append(f"{note}=`{self.src.seg(v)}` is not True/False: cog drops it")
        for arg in call.args:
            self.problems.append(f"{where}: positional argument `{self.src.seg(arg)}` to Input() is ignored by cog")
        return info

    def choices(self, node: ast.AST, note: str) -> list | None:
        """module_scope.go resolveChoicesExpr."""
        if isinstance(node, ast.List):
            ok, v = self.literal(node, note)
            return v if ok else None
        if isinstance(node, ast.Name):
            v = self.scope.get(node.id)
            return v if isinstance(v, list) else None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            a, b = self.choices(node.left, note), self.choices(node.right, note)
            return None if a is None or b is None else a + b
        if (isinstance(node, ast.Call) and self.src.seg(node.func) == "list" and node.args
                and isinstance(node.args[0], ast.Call) and isinstance(node.args[0].func, ast.Attribute)
                and isinstance(node.args[0].func.value, ast.Name)):
            d = self.scope.get(node.args[0].func.value.id)
            attr = node.args[0].func.attr
            if isinstance(d, dict) and attr in ("keys", "values"):
                return list(d.keys() if attr == "keys" else d.values())
        return None

    def registry(self) -> tuple[dict[str, ast.Call], dict[str, ast.Call]]:
        """collectInputRegistry: ``Class.attr = Input(...)`` and methods that ``return Input(...)``."""
        attrs, methods = {}, {}
        for node in self.tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            for stmt in node.body:
                if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                        and self.is_input_call(stmt.value)):
                    attrs[f"{node.name}.{stmt.targets[0].id}"] = stmt.value
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for s in stmt.body:
                        if isinstance(s, ast.Return) and s.value is not None and self.is_input_call(s.value):
                            methods[f"{node.name}.{stmt.name}"] = s.value
                            break
        return attrs, methods

    # -- annotations.go, types.go --------------------------------------------------------------------
    def input_type(self, node: ast.AST) -> InputType:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation
            node = ast.parse(node.value, mode="eval").body
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._union(self._flatten(node))
        if isinstance(node, ast.Subscript):
            outer = self._name(node.value)
            args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
            if outer == "Optional":
                if len(args) != 1:
                    raise CogBuildError(f"unsupported type: Optional expects exactly 1 type argument, got {len(args)}")
                inner = self.input_type(args[0])
                inner.nullable = True
                return inner
            if outer == "Union":
                return self._union(args)
            if outer in ("List", "list"):
                if len(args) != 1:
                    raise CogBuildError(f"unsupported type: List expects exactly 1 type argument, got {len(args)}")
                inner = self.input_type(args[0])
                if inner.nullable or inner.kind in ("array", "union"):
                    raise CogBuildError("unsupported type: nested generics like List[Optional[X]] are not supported")
                return InputType("array", elem=inner)
            if outer in ("dict", "Dict"):
                return InputType("Any")
            raise CogBuildError(f"unsupported type: {outer}[...] is not a supported input type")
        name = self._name(node)
        if name in PRIMITIVES:
            return InputType(PRIMITIVES[name])
        raise CogBuildError(f"cannot resolve type '{self.src.seg(node)}'")

    def _name(self, node: ast.AST) -> str:
        text = self.src.seg(node)
        if "." in text:  # ResolveQualifiedName: alias.Type → Type
            text = text.split(".", 1)[1]
        return text

    def _flatten(self, node: ast.AST) -> list[ast.AST]:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._flatten(node.left) + self._flatten(node.right)
        return [node]

    def _union(self, args: list[ast.AST]) -> InputType:
        nullable = any(isinstance(a, ast.Constant) and a.value is None for a in args)
        variants = [self.input_type(a) for a in args if not (isinstance(a, ast.Constant) and a.value is None)]
        if not variants:
            raise CogBuildError("unsupported type: union inputs must include at least one non-None type")
        if len(variants) == 1:
            variants[0].nullable = variants[0].nullable or nullable
            return variants[0]
        if any(v.kind in ("Path", "Secret") or v.nullable for v in variants):
            raise CogBuildError("unsupported type: Path, File and Secret cannot be union variants")
        return InputType("union", nullable=nullable)  # not used by this project; no JSON form here

    # -- target.go ------------------------------------------------------------------------------------
    def target(self, name: str, mode: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
        classes = {n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)}
        functions = {n.name: n for n in self.tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        if name in classes:
            if mode == "train":
                for n in classes[name].body:
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "train":
                        return n
                raise CogBuildError(f"{name}.train not found")
            run, predict = self._run_methods(classes, name, set())
            if run or predict:
                return run or predict
            raise CogBuildError(f"{name} must define run() or predict()")
        method = "train" if mode == "train" else "predict"
        for fname in (name, method):
            if fname in functions:
                return functions[fname]
        raise CogBuildError(f"predictor not found: {name}")

    def _run_methods(self, classes, name, seen):
        if name in seen or name not in classes:
            return None, None
        seen.add(name)
        run = predict = None
        for n in classes[name].body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if n.name == "run":
                    run = n
                elif n.name == "predict":
                    predict = n
        for base in classes[name].bases:
            r, p = self._run_methods(classes, self.src.seg(base), seen)
            run, predict = run or r, predict or p
        return run, predict

    def streaming(self, fn) -> bool:
        for d in fn.decorator_list:
            expr = d.func if isinstance(d, ast.Call) else d
            text = self.src.seg(expr)
            if "." in text:
                mod, attr = text.split(".", 1)
                if attr == "streaming" and self.imports.get(mod) == ("cog", "cog"):
                    return True
            elif self.imports.get(text) == ("cog", "streaming"):
                return True
        return False


def read_entry(path: Path | str, target: str, mode: str = "predict") -> Reading:
    """Read ``path``'s ``target`` as cog would. CogBuildError: `cog build` would fail."""
    r = _Reader(Path(path))
    fn = r.target(target, mode)
    attrs, methods = r.registry()
    out = Reading(path=Path(path), target=target, is_async=isinstance(fn, ast.AsyncFunctionDef))
    if fn.returns is None:
        raise CogBuildError(f"missing return type annotation on {fn.name}")
    out.streaming = r.streaming(fn)
    if out.streaming and r._name(fn.returns.value if isinstance(fn.returns, ast.Subscript) else fn.returns) not in (
            "Iterator", "AsyncIterator", "ConcatenateIterator", "AsyncConcatenateIterator"):
        raise CogBuildError("@streaming requires Iterator[...] or ConcatenateIterator[...] return type")
    args = fn.args
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    defaults = [None] * (len(args.posonlyargs) + len(args.args) - len(args.defaults)) + list(args.defaults)
    defaults += list(args.kw_defaults)
    order = 0
    for i, (arg, default) in enumerate(zip(params, defaults)):
        if i == 0 and arg.arg == "self":
            continue
        if arg.annotation is None:
            raise CogBuildError(f"parameter '{arg.arg}' on {fn.name} has no type annotation")
        itype = r.input_type(arg.annotation)
        f = Field(name=arg.arg, order=order, type=itype)
        if default is not None:
            end = arg.annotation
            wrapped = "(" in r.src.between(end.end_lineno, end.end_col_offset, default)  # `= (…)`
            if r.is_input_call(default) and not wrapped:
                info = r.parse_input_call(default, arg.arg)
            elif isinstance(default, ast.Attribute) and r.src.seg(default) in attrs and not wrapped:
                info = r.parse_input_call(attrs[r.src.seg(default)], arg.arg)
            elif (isinstance(default, ast.Call) and isinstance(default.func, ast.Attribute)
                  and r.src.seg(default.func) in methods and not wrapped):
                info = r.parse_input_call(methods[r.src.seg(default.func)], arg.arg)
                r.problems.append(f"{r.path.name}: input '{arg.arg}': an Input factory method; check its arguments")
            else:
                ok, val = (False, None) if wrapped else r.resolve_default(default, f"{r.path.name}: input '{arg.arg}'")
                if not ok:
                    raise CogBuildError(f"parameter '{arg.arg}': default `{r.src.seg(default)}` cannot be statically "
                                        "resolved")
                info = {"default": val}
            if "accept" in info and itype.kind != "Path":
                raise CogBuildError(f"accept is only valid on Path or File inputs (parameter '{arg.arg}')")
            info.pop("accept", None)
            for k, v in info.items():
                setattr(f, k, v)
            if itype.kind == "union" and any(getattr(f, k) is not None for k in
                                             ("choices", "ge", "le", "min_length", "max_length", "regex")):
                raise CogBuildError("unsupported type: constraints and choices are not supported on union inputs")
        out.fields.append(f)
        order += 1
    out.problems = r.problems
    return out


def input_schema(reading: Reading) -> tuple[dict, dict]:
    """openapi_spec.go buildInputSchema: the Input component and the enum components of its choices."""
    properties, required, enums = {}, [], {}
    for f in reading.fields:
        prop: dict[str, Any] = {"x-order": f.order}
        if f.choices:
            enum_type = f.type.json().get("type", "string") if f.type.kind != "array" else "array"
            enums[f.name] = {"title": f.name, "description": "An enumeration.", "enum": list(f.choices),
                             "type": enum_type}
            prop["allOf"] = [{"$ref": f"#/components/schemas/{f.name}"}]
        else:
            prop["title"] = " ".join(p[:1].upper() + p[1:] for p in f.name.split("_"))
            prop.update(f.type.json())
        nullable = f.type.nullable or (f.type.kind == "Secret" and f.default is None)
        has_default = f.default is not _MISSING and not (f.default is None and not nullable)
        if not has_default:
            required.append(f.name)
        else:
            prop["default"] = f.default
        if nullable:
            prop["nullable"] = True
        if f.description is not None:
            prop["description"] = f.description
        for key, attr in (("minimum", "ge"), ("maximum", "le"), ("minLength", "min_length"),
                          ("maxLength", "max_length"), ("pattern", "regex")):
            if getattr(f, attr) is not None:
                prop[key] = getattr(f, attr)
        if f.deprecated:
            prop["deprecated"] = True
        properties[f.name] = prop
    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums
