"""YAML that remembers where everything was written: the reader under the scenario loader.

``read_yaml`` parses one document with ``_LineLoader``, a ``yaml.SafeLoader`` that builds every
mapping as a ``LineDict`` and every sequence as a ``LineList``: an ordinary dict or list that
also remembers the line of each key and of each value, and, for a block scalar such as a zone's
``|`` text, the line where the text itself begins (the one after the ``|``). It also records
keys that a mapping repeats, which PyYAML would otherwise let the last one win silently.

YAML's own errors (scanner, parser, composer, constructor) carry a mark: they are translated
here, in ``_yaml_error``, into a ScenarioError at the mark's line, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator

import yaml

from sandbox.errors import ScenarioError

__all__ = ["LineDict", "LineList", "read_yaml"]


def _line_of_node(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _text_line_of_node(node: yaml.Node) -> int:
    """Where a scalar's text begins: a block scalar (``|``, ``>``) starts on the next line."""
    block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
    return _line_of_node(node) + (1 if block else 0)


class LineDict(dict[object, object]):
    """A mapping read from YAML that remembers where each key and value was written."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[object, int] = {}
        self.value_lines: dict[object, int] = {}
        self.text_lines: dict[object, int] = {}
        # (key, line of its first appearance, line of the repeat), in file order.
        self.duplicates: list[tuple[object, int, int]] = []

    def line_of(self, key: object) -> int | None:
        """The line of ``key`` itself."""
        return self.key_lines.get(key)

    def remember(self, key: object, key_node: yaml.Node, value_node: yaml.Node) -> None:
        self.key_lines[key] = _line_of_node(key_node)
        self.value_lines[key] = _line_of_node(value_node)
        self.text_lines[key] = _text_line_of_node(value_node)


class LineList(list[object]):
    """A sequence read from YAML that remembers the line of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []
        self.text_lines: list[int] = []


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building LineDict/LineList, which leaves dates as the strings people wrote."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        # Explicit tags (`!!float abc`) fail inside PyYAML's constructors with bare ValueErrors;
        # give them the node's mark so that they are reported at their line like the rest.
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError, IndexError) as error:  # `!!float ""`
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({error})", node.start_mark
            ) from error


# The longest number a scenario may write, in characters (the seed's 20 digits are the most
# any value needs). PyYAML converts a number of any length: past 4,300 decimal digits Python
# refuses with a ValueError, and a hexadecimal one makes an integer so large that it cannot be
# printed in an error message (or in the run's JSON) afterwards.
MAX_NUMBER_LENGTH = 100


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    written = str(node.value).replace("_", "").lstrip("+-")
    if len(written) > MAX_NUMBER_LENGTH:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"a number of {len(written):,} digits is far larger than any value of a scenario "
            f"can be (the longest, a seed, has 20); write a smaller number",
            node.start_mark,
        )
    return loader.construct_yaml_int(node)


_LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)

# `title: 2024-05-01` should stay text: no scenario value is a date.
_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_line_dict(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Iterator[LineDict]:
    data = LineDict(_line_of_node(node))
    yield data
    own_key_nodes = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # `<<: *anchor` merges come first, the mapping's own keys last
    own_lines: dict[object, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=False)
        _check_hashable(key, node, key_node)
        data[key] = loader.construct_object(value_node, deep=False)
        data.remember(key, key_node, value_node)
        if id(key_node) in own_key_nodes:  # a merged key may be overridden, not repeated
            line = _line_of_node(key_node)
            if key in own_lines:
                data.duplicates.append((key, own_lines[key], line))
            own_lines.setdefault(key, line)


def _check_hashable(key: object, node: yaml.Node, key_node: yaml.Node) -> None:
    try:
        hash(key)
    except TypeError:
        raise yaml.constructor.ConstructorError(
            "while constructing a mapping",
            node.start_mark,
            "found unhashable key",
            key_node.start_mark,
        ) from None


def _construct_line_list(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> Iterator[LineList]:
    data = LineList(_line_of_node(node))
    yield data
    for child in node.value:
        data.append(loader.construct_object(child, deep=False))
        data.item_lines.append(_line_of_node(child))
        data.text_lines.append(_text_line_of_node(child))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_line_dict)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_line_list)


def read_yaml(text: str, source: str) -> object:
    """The document in ``text``, built of LineDict/LineList; YAML errors become ScenarioError."""
    try:
        return _single_document(text)
    except yaml.MarkedYAMLError as error:
        raise _yaml_error(error, source) from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise ScenarioError(
            f"character #x{error.character:04x} is not allowed in YAML; delete it or write it "
            "as an escape inside a double-quoted string",
            file=source,
            line=line,
        ) from None
    except RecursionError:
        raise ScenarioError(
            "the YAML nests too deeply to read; flatten it", file=source, line=1
        ) from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"invalid YAML ({error}); correct it", file=source) from None


def _single_document(text: str) -> object:
    loader = _LineLoader(text)  # checks for unprintable characters at once
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_error(error: yaml.MarkedYAMLError, source: str) -> ScenarioError:
    """One sentence at the line of the YAML mark that says what to change."""
    problem = (error.problem or "").strip()
    context = (error.context or "").strip()
    mark = error.problem_mark or error.context_mark
    line = None if mark is None else int(mark.line) + 1
    if "\\t" in problem:
        message = "a tab cannot indent YAML; indent with spaces instead"
    elif "quoted scalar" in context and error.context_mark is not None:
        line = int(error.context_mark.line) + 1
        message = "the quoted text that starts on this line is never closed; add the closing quote"
    elif "single document" in context + problem:
        message = "the file holds more than one YAML document; keep one scenario per file"
    elif "undefined alias" in problem:
        message = f"invalid YAML: {problem}; define the anchor (&name) before using *name"
    elif "constructor for the tag" in problem:
        message = f"invalid YAML: {problem}; remove the tag"
    elif problem.startswith("a number of "):
        message = problem
    elif problem.startswith("cannot read this value"):
        message = f"{problem}; remove its '!!' tag or correct the value"
    elif "unhashable key" in problem:
        message = "a key is a list or a mapping; keys must be plain words such as 'hosts'"
    elif "mapping values are not allowed" in problem:
        message = (
            "a ': ' inside a value reads as the start of a new key; put the whole value in "
            "quotes, or fix the indentation"
        )
    else:
        said = f"{context}, {problem}" if context else problem
        message = f"invalid YAML ({said}); check the indentation and quoting on this line"
    return ScenarioError(message, file=source, line=line)
