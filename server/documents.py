"""Cassette text → Python data, safely, remembering the line each interaction starts on.

YAML is parsed with PyYAML's safe loader (its C implementation when libyaml is present): no
tag can construct a Python object, and ``!!binary`` gives ``bytes``. Line numbers come from the
composed node tree, so load errors can point at the interaction that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from .errors import CassetteLoadError

SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Document:
    """A parsed cassette file: its data, and where things are in the text (1-based lines)."""

    data: Any
    interaction_lines: tuple[int, ...] = ()  # the line of each item of top-level `interactions`
    key_lines: dict[str, int] | None = None  # the line of each top-level key

    def line_of_key(self, key: str) -> int | None:
        return (self.key_lines or {}).get(key)

    def line_of_interaction(self, position: int) -> int | None:
        lines = self.interaction_lines
        return lines[position] if 0 <= position < len(lines) else None


def parse_document(text: bytes, *, file: str) -> Document:
    """Parse one YAML (or JSON, which YAML reads too) document.

    Raises CassetteLoadError with the file and the line of the problem.
    """
    loader = SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        reason = f"invalid YAML: {error.problem or error.context}"
        if error.context and error.context_mark and error.problem_mark and error.context_mark.line != error.problem_mark.line:
            reason += f" ({error.context} that starts at line {error.context_mark.line + 1})"
        raise CassetteLoadError(reason, file=file, line=mark.line + 1 if mark else None) from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as error:
        raise CassetteLoadError(f"invalid YAML: {error}", file=file) from None
    finally:
        loader.dispose()
    return Document(data, *_lines(node))


def _lines(node: yaml.Node | None) -> tuple[tuple[int, ...], dict[str, int]]:
    if not isinstance(node, yaml.MappingNode):
        return (), {}
    key_lines: dict[str, int] = {}
    interaction_lines: tuple[int, ...] = ()
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key_lines[str(key_node.value)] = key_node.start_mark.line + 1
        if key_node.value == "interactions" and isinstance(value_node, yaml.SequenceNode):
            interaction_lines = tuple(item.start_mark.line + 1 for item in value_node.value)
    return interaction_lines, key_lines
