"""Bounded YAML reading for every file the user hands us.

A YAML file can cost far more than its size: aliases expand (a "billion laughs"
of a few hundred bytes becomes billions of nodes once anything walks it),
deep nesting overflows the C composer's stack, and a path can name a device or
a huge file. Every stack file, records file and bindy document is read here:
at most `max_bytes` bytes, a first streaming pass over the parser's events
that bounds nesting depth and the number of nodes aliases add, and only then
the ordinary safe load (which shares aliased objects instead of copying them).
A refused file therefore costs about one pass over its bytes, well under what
a valid file of the same size costs to load.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Largest file read, unless the caller gives its own bound.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: Deepest nesting of lists and mappings accepted (stack config needs about 8).
MAX_DEPTH = 64
#: Nodes aliases may add on top of the nodes written in the file.
MIN_ALIAS_BUDGET = 100_000


class YamlLimitError(ValueError):
    """The file is refused before it is loaded; the message says why and what to do."""


def read_bytes(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The file's bytes; YamlLimitError when it is not a regular file or is too big.

    One open and one fstat (a records file per zone: thousands of reads per build).
    O_NONBLOCK: opening a FIFO must not wait for a writer before it is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise IsADirectoryError(21, "is a directory", str(path)) from None
    with open(fd, "rb", buffering=0) as fh:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(21, "is a directory", str(path))
        if not stat.S_ISREG(info.st_mode):
            raise YamlLimitError(f"{path} is not a regular file; name a YAML file")
        size = info.st_size
        if size > max_bytes:
            raise YamlLimitError(
                f"{path} is {size} bytes, over the {max_bytes}-byte limit for input files; "
                "split it into several files"
            )
        # One read of the size seen, then until the end (a file may grow while read);
        # read(n) allocates n bytes up front, so never more than the limit allows.
        chunks: list[bytes] = []
        total = 0
        want = size + 1
        while total <= max_bytes:
            chunk = fh.read(min(max(want, 1 << 16), max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            want = 1 << 20
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if len(data) > max_bytes:
        raise YamlLimitError(f"{path} grew past the {max_bytes}-byte limit while read")
    return data


def check_events(text: str | bytes, *, max_depth: int = MAX_DEPTH,
                 alias_budget: int | None = None) -> None:
    """Stream the parser's events; refuse deep nesting and alias expansion past the budget.

    The weight of a node is the number of nodes it expands to; an alias weighs
    what its anchor weighs. Nothing is built: memory stays about one event.
    """
    stack: list[list[Any]] = []  # [anchor, weight] of each open collection
    weights: dict[str, int] = {}
    written = 0  # nodes in the file
    total = 0  # nodes once every alias is expanded

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in weights:
                # Undefined (the loader reports it) or recursive (refused here).
                if any(entry[0] == event.anchor for entry in stack):
                    raise YamlLimitError(
                        f"alias *{event.anchor} refers to a node that contains it "
                        "(a recursive structure); write the data out instead"
                    )
                continue
            weight = weights[event.anchor]
        elif isinstance(event, yaml.ScalarEvent):
            written += 1
            weight = 1
            if event.anchor:
                weights[event.anchor] = 1
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            written += 1
            total += 1
            stack.append([event.anchor, 1])
            if len(stack) > max_depth:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise YamlLimitError(
                    f"nesting deeper than {max_depth} levels (line {line}); flatten the data"
                )
            continue
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, weight = stack.pop()
            if anchor:
                weights[anchor] = weight
            if stack:
                stack[-1][1] += weight
            continue
        else:
            continue
        total += weight
        if stack:
            stack[-1][1] += weight
        budget = alias_budget if alias_budget is not None else max(MIN_ALIAS_BUDGET, written)
        if total - written > budget:
            raise YamlLimitError(
                f"aliases (*name) expand to over {written + budget} nodes from {written} "
                "written (an alias bomb?); write the data out instead of nesting aliases"
            )


def load(text: str | bytes, **limits: Any) -> Any:
    """One document, after check_events (in one pass when the document is plain data)."""
    docs = _plain_documents(text, limits.get("max_depth", MAX_DEPTH))
    if docs is not None and len(docs) <= 1:
        return docs[0] if docs else None
    check_events(text, **limits)
    return yaml.load(text, Loader=_Loader)


def load_all(text: str | bytes, **limits: Any) -> list[Any]:
    """Every document of a stream, after check_events (in one pass for plain data)."""
    docs = _plain_documents(text, limits.get("max_depth", MAX_DEPTH))
    if docs is not None:
        return docs
    check_events(text, **limits)
    return list(yaml.load_all(text, Loader=_Loader))


# --------------------------------------------------------------------------- one pass
#
# A records file of 200,000 records is about 1.7 million parser events. Checking them,
# then parsing again, composing nodes (two Marks each) and resolving every scalar in
# Python costs about 30 s; building the data straight from the one stream of events
# costs a few. That is done for documents made only of mappings, sequences and
# untagged scalars, keyed by scalars: exactly what check_events has nothing to bound
# but depth, which is bounded here with the same message. Anything else (an anchor, an
# alias, a tag, a merge key '<<', a collection as a key) goes the general way above.

_STR = "tag:yaml.org,2002:str"
_OTHER = object()  # this scalar needs the general way
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()
#: The tag the resolver gives a scalar. cast: types-PyYAML leaves BaseResolver.resolve
#: unannotated; it takes (node class, value, (plain, quoted)) and returns the tag.
_resolve_tag = cast(
    Callable[[type[yaml.Node], str, tuple[bool, bool]], str], _resolver.resolve
)


def _plain_scalar(value: str) -> Any:
    tag = _resolve_tag(yaml.ScalarNode, value, (True, False))
    if tag == _STR:
        return value
    construct = yaml.constructor.SafeConstructor.yaml_constructors.get(tag)
    if construct is None or tag.endswith((":merge", ":value")):
        return _OTHER
    return construct(_constructor, yaml.ScalarNode(tag, value))


def _plain_documents(text: str | bytes, max_depth: int) -> list[Any] | None:
    """Every document built from the parser's events; None when one is not plain data."""
    docs: list[Any] = []
    stack: list[Any] = []  # open collections
    keys: list[Any] = []  # per open collection: the pending key of a mapping (or _OTHER)
    plain: dict[str, Any] = {}
    scalar_event, start_events = yaml.ScalarEvent, (yaml.MappingStartEvent,
                                                    yaml.SequenceStartEvent)
    end_events = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    root: Any = None
    events: Any = yaml.parse(text, Loader=_Loader)
    for event in events:
        kind = type(event)
        if kind is scalar_event:
            if event.anchor is not None or event.tag is not None:
                return None
            if event.implicit[0]:
                value = plain.get(event.value, _OTHER)
                if value is _OTHER:
                    value = _plain_scalar(event.value)
                    if value is _OTHER:
                        return None
                    plain[event.value] = value
            else:
                value = event.value
        elif kind in start_events:
            if event.anchor is not None or event.tag is not None:
                return None
            if len(stack) >= max_depth:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise YamlLimitError(
                    f"nesting deeper than {max_depth} levels (line {line}); flatten the data"
                )
            if stack and keys[-1] is _OTHER and isinstance(stack[-1], dict):
                return None  # a collection as a mapping key
            stack.append({} if kind is yaml.MappingStartEvent else [])
            keys.append(_OTHER)
            continue
        elif kind in end_events:
            value = stack.pop()
            keys.pop()
        elif kind is yaml.AliasEvent:
            return None
        elif kind is yaml.DocumentEndEvent:
            docs.append(root)
            root = None
            continue
        else:
            continue
        if not stack:
            root = value
            continue
        top = stack[-1]
        if type(top) is list:
            top.append(value)
        elif keys[-1] is _OTHER:
            keys[-1] = value
        else:
            top[keys[-1]] = value
            keys[-1] = _OTHER
    return docs


def load_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES, *, all_documents: bool = False,
              **limits: Any) -> Any:
    data = read_bytes(path, max_bytes)
    return load_all(data, **limits) if all_documents else load(data, **limits)


def describe(value: Any) -> str:
    """What a value is, in YAML words, for messages ('a list', 'a mapping', ...)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "empty"
    return type(value).__name__


def path_inside(project_dir: Path, value: str) -> tuple[Path | None, str | None]:
    """Resolve a config path against the project; (path, None) or (None, why refused)."""
    if not value.strip():
        return None, "is empty; give a path relative to the project directory"
    if "\0" in value:
        return None, "contains a NUL byte; give a path relative to the project directory"
    if os.path.isabs(value):
        return None, (
            f"{value!r} is an absolute path; files are read only from inside the project "
            f"directory ({project_dir}): copy the file into the project and give its "
            "relative path"
        )
    root = project_dir.resolve()
    target = (project_dir / value).resolve()
    if not target.is_relative_to(root):
        how = "through a symlink" if ".." not in Path(value).parts else "with '..'"
        return None, (
            f"{value!r} leaves the project directory {how} (it resolves to {target}); "
            "files are read only from inside the project: copy the file into the "
            "project and give its relative path"
        )
    return target, None
