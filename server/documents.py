"""Cassette text → Python data, safely, remembering the line each interaction starts on; and
back: Python data → cassette text, for the recorder.

YAML is parsed with PyYAML's safe loader (its C implementation when libyaml is present): no
tag can construct a Python object, and ``!!binary`` gives ``bytes``. Line numbers come from the
composed node tree, so load errors can point at the interaction that is wrong. Header values and
bodies are read as the text written (``false`` stays ``false``, ``12:30`` is not 750).

JSON (vcrpy's JSON serializer) is parsed with the json module, not as YAML: YAML 1.1 cannot
read the surrogate-pair escapes (``\\ud83d\\ude00``) that ``json.dumps`` writes for emoji.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.decoder import scanstring
from typing import Any

import yaml

from .errors import CassetteLoadError

SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_STR_TAG = "tag:yaml.org,2002:str"


class CassetteLoader(SafeLoader):  # type: ignore[misc, valid-type]
    """The safe loader plus the harmless Python tags that old vcrpy cassettes carry.

    Python 2 era vcrpy wrote ``!!python/unicode 'text'`` and ``!!python/str``; its own loader
    reads them as strings, and so do we. ``!!python/tuple`` becomes a list, ``!!python/bytes``
    bytes, and a pickled ``BytesIO`` request body (``!!python/object/new:_io.BytesIO``) the
    bytes it held. No tag ever constructs an object or calls anything: every other
    ``!!python/…`` tag is still refused.

    Tags are resolved as PyYAML resolves them, faster: its C parser calls back into Python for
    every node, and the resolver tried each candidate pattern on every plain scalar (the same
    keys and header names, file after file). A quoted scalar is text at once; a short plain one
    is resolved once per process. Parsing a corpus file: 1.7 → 1.3 ms.
    """

    def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
        if kind is not yaml.ScalarNode:
            return _base_resolve(self, kind, value, implicit)  # type: ignore[no-any-return]
        if not implicit[0]:  # quoted, or a block scalar: no implicit type (and no path resolvers here)
            return _STR_TAG
        tag: str | None = _PLAIN_TAGS.get(value)
        if tag is None:
            tag = _base_resolve(self, kind, value, implicit)
            if len(value) <= _CACHED_LENGTH and len(_PLAIN_TAGS) < _CACHED_VALUES:
                _PLAIN_TAGS[value] = tag
        return tag

    # No path resolvers are ever added: the per-node bookkeeping for them is skipped.
    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


_base_resolve = yaml.resolver.BaseResolver.resolve
_PLAIN_TAGS: dict[str, str] = {}  # plain scalar → its implicit tag (a tag depends on the text alone)
_CACHED_LENGTH = 64
_CACHED_VALUES = 10_000


def _python_string(loader: Any, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))


def _python_tuple(loader: Any, node: yaml.Node) -> list[Any]:
    return list(loader.construct_sequence(node))


def _python_bytes(loader: Any, node: yaml.Node) -> bytes:
    return bytes(loader.construct_yaml_binary(node))


def _bytesio_content(loader: Any, node: yaml.Node) -> bytes:
    state = loader.construct_mapping(node, deep=True).get("state") if isinstance(node, yaml.MappingNode) else None
    content = state[0] if isinstance(state, (list, tuple)) and state else b""
    return content.encode("utf-8") if isinstance(content, str) else content if isinstance(content, bytes) else b""


for _tag, _constructor in {
    "python/str": _python_string,
    "python/unicode": _python_string,
    "python/tuple": _python_tuple,
    "python/bytes": _python_bytes,
    "python/object/new:_io.BytesIO": _bytesio_content,
}.items():
    CassetteLoader.add_constructor("tag:yaml.org,2002:" + _tag, _constructor)


@dataclass(frozen=True)
class Document:
    """A parsed cassette file: its data, and where things are in the text (1-based lines)."""

    data: Any
    interaction_lines: tuple[int, ...] = ()  # the line of each item of top-level `interactions` (else `requests`)
    key_lines: dict[str, int] | None = None  # the line of each top-level key
    syntax: str = "yaml"  # or "json"

    def line_of_key(self, key: str) -> int | None:
        return (self.key_lines or {}).get(key)

    def line_of_interaction(self, position: int) -> int | None:
        lines = self.interaction_lines
        return lines[position] if 0 <= position < len(lines) else None


def parse_document(text: bytes, *, file: str) -> Document:
    """Parse one YAML or JSON document (JSON when it starts with ``{`` or ``[``).

    Raises CassetteLoadError with the file and the line of the problem.
    """
    if looks_like_json(text):
        try:
            return _parse_json(text)
        except (ValueError, RecursionError) as error:
            try:  # a YAML flow mapping (`{version: 1, ...}`) also starts with a brace
                return _parse_yaml(text, file=file)
            except CassetteLoadError:
                raise CassetteLoadError(f"invalid JSON: {_json_reason(error)}", file=file,
                                        line=getattr(error, "lineno", None)) from None
    return _parse_yaml(text, file=file)


def looks_like_json(text: bytes) -> bool:
    """Whether a document is JSON rather than YAML: its first character is a brace or bracket."""
    return text.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[")


def _parse_yaml(text: bytes, *, file: str) -> Document:
    loader = CassetteLoader(text)
    try:
        node = loader.get_single_node()
        anchors = may_have_anchor(text)
        if node is not None:
            if anchors:  # no anchor, no alias: nothing to expand
                _check_aliases(node, limit=_EXPANSION_FACTOR * len(text) + _EXPANSION_ALLOWANCE, file=file)
            keep_sent_text(node)
        data = None if node is None else construct(loader, node, plain=not anchors)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        reason = f"invalid YAML: {error.problem or error.context}"
        if error.context and error.context_mark and error.problem_mark and error.context_mark.line != error.problem_mark.line:
            reason += f" ({error.context} that starts at line {error.context_mark.line + 1})"
        raise CassetteLoadError(reason, file=file, line=mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as error:  # bytes that are not UTF-8 (or UTF-16), control characters
        line = text.count(b"\n", 0, error.position) + 1 if isinstance(error.position, int) else None
        raise CassetteLoadError(_unreadable_text(error, text), file=file, line=line) from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as error:
        raise CassetteLoadError(f"invalid YAML: {error}", file=file) from None
    except RecursionError:
        raise CassetteLoadError("invalid YAML: nested too deeply", file=file) from None
    finally:
        loader.dispose()
    return Document(data, *_lines(node))


_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
# Scalars PyYAML's safe constructor builds in one step, from the node alone.
_SCALAR_TAGS = frozenset("tag:yaml.org,2002:" + kind for kind in ("null", "bool", "int", "float", "binary", "timestamp"))


class _Unusual(Exception):
    """A node the direct construction leaves to PyYAML's constructor."""


def construct(loader: Any, node: yaml.Node, *, plain: bool) -> Any:
    """The data of a composed document. A ``plain`` one (no anchor, hence no alias: no node is
    shared) made only of mappings, sequences, text and the common scalars is built directly,
    in a third of the time PyYAML's constructor takes (it keeps every node in a table of
    objects built, and builds each mapping and sequence in two steps, for aliases); anything
    else (merge keys, sets, Python tags, a key that is not a scalar) goes to PyYAML's, so the
    data and the errors are PyYAML's either way."""
    if plain:
        try:
            return _construct(loader, node)
        except (_Unusual, RecursionError):
            pass
    return loader.construct_document(node)


def _construct(loader: Any, node: yaml.Node) -> Any:
    tag = node.tag
    kind = type(node)
    if kind is yaml.ScalarNode:
        if tag == _STR_TAG:
            return node.value
        if tag in _SCALAR_TAGS:
            return loader.yaml_constructors[tag](loader, node)
    elif kind is yaml.MappingNode and tag == _MAP:
        data = {}
        for key_node, value_node in node.value:
            if type(key_node) is not yaml.ScalarNode:  # a mapping or sequence as a key (merge and = keys: below)
                raise _Unusual
            data[_construct(loader, key_node)] = _construct(loader, value_node)
        return data
    elif kind is yaml.SequenceNode and tag == _SEQ:
        return [_construct(loader, item) for item in node.value]
    raise _Unusual


def _unreadable_text(error: yaml.reader.ReaderError, text: bytes) -> str:
    """Bytes that are not UTF-8, or a character YAML does not allow in text (a control character)."""
    try:
        text.decode("utf-16" if text[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8")
    except UnicodeDecodeError:
        return (f"not UTF-8 text ({error.reason} at byte {error.position}): a cassette is UTF-8 (or UTF-16) text; "
                "convert the file to UTF-8, and write a body that is not text as !!binary")
    character = f"#x{error.character:04x}" if isinstance(error.character, int) else repr(error.character)
    return (f"invalid YAML: a character YAML does not allow in text ({character} at byte {error.position}); "
            "write a body holding control characters as !!binary, or escape them in a double-quoted string")


# Aliases (``*id001``) let a few bytes stand for huge data ("billion laughs"). Writers do use
# them (PyYAML, hence vcrpy, anchors repeated header mappings), so they are allowed as long as
# the data they expand to stays within a multiple of the file's own size.
_EXPANSION_FACTOR = 16
_EXPANSION_ALLOWANCE = 1_000_000
# An anchor (``&name``) starts a node: at a line's start or after a space, ``[``, ``{`` or ``,``.
# The walk that sizes aliases is a third of a large file's parse time, and most files have no
# anchor; an ``&`` inside text (a URL's query) is not preceded so, and a false alarm only walks.
_BEFORE_ANCHOR = frozenset(b" \t\r\n[{,")


def may_have_anchor(text: bytes) -> bool:
    """Whether ``text`` may hold a YAML anchor: an ``&`` where a node starts, followed by a name.
    A search for ``&`` (memchr), then a look around each: a regular expression for the same
    took a tenth of a large corpus's load time, trying its alternatives at every byte."""
    at = text.find(b"&")
    while at != -1:
        if (at == 0 or text[at - 1] in _BEFORE_ANCHOR) and at + 1 < len(text) and not text[at + 1 : at + 2].isspace():
            return True
        at = text.find(b"&", at + 1)
    return False


def _check_aliases(root: yaml.Node, *, limit: int, file: str) -> None:
    """Refuse a document whose aliases expand beyond ``limit`` (scalar characters + nodes) or
    refer to themselves. Iterative, and each node is sized once: linear in the node count."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _child_nodes(node)
        if children_done:
            in_progress.discard(id(node))
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            sizes[id(node)] = 1 + own + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > limit:
                raise CassetteLoadError(
                    f"invalid YAML: its aliases expand to more than {limit:,} characters; "
                    "write the data out instead of repeating it with anchors", file=file,
                    line=node.start_mark.line + 1)
            continue
        in_progress.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in in_progress:
                raise CassetteLoadError("invalid YAML: an alias refers to the node that contains it",
                                        file=file, line=child.start_mark.line + 1)
            if id(child) not in sizes:
                stack.append((child, False))


# YAML 1.1 types plain scalars: `false` → False, `0755` → 493, `12:30` → 750, `yes` → True,
# `1.50` → 1.5. Go's YAML writers (YAML 1.2, or no sexagesimal numbers) leave such header values
# and bodies unquoted, so what is sent as text is kept as the text written. Null stays null
# (`body: null` is no body), and `<<` merge keys keep working.
_TYPED_TEXT = frozenset("tag:yaml.org,2002:" + kind for kind in ("bool", "int", "float", "timestamp"))
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_TEXT_BODY_TYPES = ("text", "binary")  # typed bodies whose content is text (vcrpy.py)


def keep_sent_text(root: yaml.Node) -> None:
    """Read as text what a cassette sends as text: in each interaction's request and response,
    header names and values, and bodies (``body``, ``body.string``, ``content``, the content of
    a typed text or binary body). Numbers elsewhere (``code: 200``, ``id: 0``, offsets, and the
    JSON data of ``parsed_body`` or of a body written as a YAML mapping) keep their type; in
    such JSON data, a date stays the text written (JSON has no dates)."""
    for message in _messages(root):
        fields = _fields(message)
        headers = fields.get("headers")
        stack = [headers] if headers is not None else []
        while stack:  # header mappings may be shared through aliases: retagging twice is harmless
            node = stack.pop()
            stack += _child_nodes(node)
            _as_text(node)
        for field in ("body", "content"):
            body = fields.get(field)
            _as_text(body)
            if isinstance(body, yaml.MappingNode):
                typed = _fields(body)
                _as_text(typed.get("string"))
                kind = typed.get("type")
                if isinstance(kind, yaml.ScalarNode) and kind.value in _TEXT_BODY_TYPES:
                    _as_text(typed.get("content"))
            _dates_as_text(body)


def _messages(root: yaml.Node) -> list[yaml.Node]:
    """Every request and response node: of ``interactions``, or of the ``requests`` and
    ``responses`` lists of vcrpy's in-memory layout (formats/vcrpy.py)."""
    found = []
    top = _fields(root)
    interactions = top.get("interactions")
    for interaction in interactions.value if isinstance(interactions, yaml.SequenceNode) else ():
        sides = _fields(interaction)
        found += [node for side in ("request", "response") if (node := sides.get(side)) is not None]
    for side in ("requests", "responses") if interactions is None else ():
        items = top.get(side)
        found += items.value if isinstance(items, yaml.SequenceNode) else []
    return found


def _fields(node: yaml.Node | None) -> dict[str, yaml.Node]:
    """The value nodes of a mapping node's plain keys, by key (the last of a repeated key, as
    the constructor keeps): one pass, however many fields are then looked at."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: value for key, value in node.value if isinstance(key, yaml.ScalarNode)}


def _dates_as_text(body: yaml.Node | None) -> None:
    """In a body written as YAML data, plain scalars that YAML 1.1 reads as timestamps."""
    stack = _child_nodes(body) if isinstance(body, (yaml.MappingNode, yaml.SequenceNode)) else []
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases: each node once, and no cycle walked around
            continue
        seen.add(id(node))
        stack += _child_nodes(node)
        if isinstance(node, yaml.ScalarNode) and not node.style and node.tag == _TIMESTAMP_TAG:
            node.tag = _STR_TAG


def _as_text(node: yaml.Node | None) -> None:
    if isinstance(node, yaml.ScalarNode) and not node.style and node.tag in _TYPED_TEXT:  # plain: None or ""
        node.tag = _STR_TAG


def _child_nodes(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _lines(node: yaml.Node | None) -> tuple[tuple[int, ...], dict[str, int]]:
    if not isinstance(node, yaml.MappingNode):
        return (), {}
    key_lines: dict[str, int] = {}
    interaction_lines: tuple[int, ...] = ()
    request_lines: tuple[int, ...] = ()
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key_lines[str(key_node.value)] = key_node.start_mark.line + 1
        if key_node.value == "interactions" and isinstance(value_node, yaml.SequenceNode):
            interaction_lines = tuple(item.start_mark.line + 1 for item in value_node.value)
        elif key_node.value == "requests" and isinstance(value_node, yaml.SequenceNode):  # vcrpy's in-memory layout
            request_lines = tuple(item.start_mark.line + 1 for item in value_node.value)
    if "interactions" not in key_lines:
        interaction_lines = request_lines
    return interaction_lines, key_lines


def _parse_json(text: bytes) -> Document:
    source = text.decode("utf-8-sig")  # UnicodeDecodeError is a ValueError
    return Document(json.loads(source), *_json_lines(source), syntax="json")


def _json_reason(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return error.msg if isinstance(error, json.JSONDecodeError) else str(error)


# Only the top level is walked here, in Python; every value below it is skipped by the json
# module's C scanner. (Tokenising the whole text with a regex took seconds on a cassette holding
# a 20 MB string, hundreds of times longer than parsing it.)
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
_JSON_DECODER = json.JSONDecoder()


def _json_lines(source: str) -> tuple[tuple[int, ...], dict[str, int]]:
    """The line of each top-level key and of each item of the top-level ``interactions``
    array, in a JSON text that ``json.loads`` has already read (so its syntax is valid)."""
    key_lines: dict[str, int] = {}
    interaction_lines: list[int] = []
    line, counted = 1, 0  # the line at position ``counted``

    def line_at(position: int) -> int:
        nonlocal line, counted
        line += source.count("\n", counted, position)
        counted = position
        return line

    def skip_space(position: int) -> int:
        return _JSON_WHITESPACE.match(source, position).end()  # type: ignore[union-attr]

    position = skip_space(0)
    if not source.startswith("{", position):
        return (), {}
    position = skip_space(position + 1)
    while source.startswith('"', position):
        key_line = line_at(position)
        key, position = scanstring(source, position + 1)
        key_lines.setdefault(key, key_line)
        position = skip_space(skip_space(position) + 1)  # past the colon
        if key == "interactions" and source.startswith("[", position):
            interaction_lines = []  # json.loads keeps the last of repeated keys; so do we
            position = skip_space(position + 1)
            while not source.startswith("]", position):
                interaction_lines.append(line_at(position))
                position = skip_space(_JSON_DECODER.raw_decode(source, position)[1])
                if source.startswith(",", position):
                    position = skip_space(position + 1)
            position += 1
        else:
            position = _JSON_DECODER.raw_decode(source, position)[1]
        position = skip_space(position)
        if not source.startswith(",", position):
            break
        position = skip_space(position + 1)
    return tuple(interaction_lines), key_lines


class CassetteDumper(SafeDumper):  # type: ignore[misc, valid-type]
    """The safe dumper, writing cassettes the way people read them: multi-line text (SSE bodies,
    pretty JSON) as literal blocks, lists of numbers (``event_offsets``) on one line, bytes that
    are not UTF-8 as ``!!binary``, and no line ever folded (a folded line is one more place
    for two YAML readers to disagree)."""


# Characters that YAML 1.1 (PyYAML: line breaks) and 1.2 (Go's yaml: ordinary characters) read
# differently when written raw, and characters no YAML scalar holds raw: text with any of
# them is written double-quoted, where they are escaped.
_NEEDS_ESCAPES = re.compile("[\r\x85\u2028\u2029\ufeff]|[^\t\n\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _represent_text(dumper: yaml.BaseDumper, text: str) -> yaml.ScalarNode:
    if _NEEDS_ESCAPES.search(text):
        style: str | None = '"'
    elif "\n" in text:
        style = "|"  # where a block cannot hold the text (trailing spaces), the emitter quotes it
    else:
        style = None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


def _represent_list(dumper: yaml.BaseDumper, items: list[Any]) -> yaml.SequenceNode:
    numbers = bool(items) and all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=numbers)


CassetteDumper.add_representer(str, _represent_text)
CassetteDumper.add_representer(list, _represent_list)
# No anchors and aliases: each value is written where it is (a recorder appends items whose
# anchors could clash, and a reader need not look elsewhere).
CassetteDumper.ignore_aliases = lambda self, data: True
_NO_FOLDING = 2**31 - 1  # libyaml's largest width: lines are never folded


def dump_document(data: Any, *, syntax: str = "yaml", explicit_start: bool = False) -> bytes:
    """Cassette data as text that ``parse_document`` reads back to the same data.

    YAML keeps the mappings' key order and writes UTF-8 text as text; JSON is written the way
    vcrpy's JSON serializer writes it (4-space indents, ASCII escapes, a final newline). Raises
    ValueError for data the syntax cannot hold (bytes in JSON).
    """
    if syntax == "json":
        try:
            return (json.dumps(data, indent=4) + "\n").encode("ascii")
        except TypeError as error:
            raise ValueError(f"JSON cannot hold this cassette: {error} (a binary body needs a YAML cassette)") from None
    text = yaml.dump(data, Dumper=CassetteDumper, sort_keys=False, allow_unicode=True, width=_NO_FOLDING,
                     default_flow_style=False, explicit_start=explicit_start, encoding="utf-8")
    return bytes(text)
