"""Faster attribute access for betterproto messages, with the same behaviour.

betterproto 2.0.0b7 (the release whose compiler makes our grpclib stubs) routes every attribute read and write
of every message through Python-level `Message.__getattribute__` / `__setattr__`, which look up the class's
metadata through a class property and check for `oneof` groups each time.  Profiles of a busy node showed
those two methods alone at about a third of its CPU.

`install()` replaces both, and `Message.__post_init__` (run by every message's constructor, and for every
sub-message a decode creates), with versions that do the same thing faster:

* the metadata (`_betterproto`) becomes a plain class attribute of each message class once it is first used
  (the class property computed and cached exactly that object already);
* for a class without `oneof` groups -- most of ours -- the group bookkeeping is skipped, because for such a
  class it never does anything: no field belongs to a group.  A class with groups keeps the original methods;
* `__post_init__` of such a class walks a cached tuple of (field name, optional) instead of the metadata
  mapping and one Python-level attribute read per field;
* `Message.__raw_get` (name-mangled `_Message__raw_get`: a read that skips the default, used by the Rust codec
  for every field it encodes, and by `__eq__`, `__repr__`, `is_set`) is `super().__getattribute__(name)`, and
  for every message class that super is `object`: it becomes `object.__getattribute__` itself, the same
  lookup without a Python frame and a `super()` object per field.  A 92-message seat map encoded in about
  215 us instead of 250;
* `__setattr__` (which a decode calls for every field) asks whether the value is a Message once per type of
  value, not through ABCMeta.__instancecheck__ every time: decoding that seat map took ~375 us, now ~275;
* the dataclass `__init__` of such a class is replaced, on first use, by one generated the same way
  dataclasses generates it, that stores the fields straight into the instance instead of calling
  `__setattr__` once per field (and then does what that `__setattr__` would have done: mark an empty
  sub-message given as a value as set).  Building a 92-message seat map took 0.65 ms, now about 0.1 ms;
  decoding one 0.80 ms, now about 0.35 ms.

What stays: unset fields hold betterproto's PLACEHOLDER and get their default on first read (as before), and
setting a field marks the message as serialized on the wire (as before).  tests/test_proto_speedups.py checks
that encoding, decoding, defaults and oneof behaviour are the same with and without `install()`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import betterproto
from betterproto import PLACEHOLDER, Message

__all__ = ["install", "installed"]

_ORIGINAL_GETATTRIBUTE = Message.__getattribute__
_ORIGINAL_SETATTR = Message.__setattr__
_ORIGINAL_POST_INIT = Message.__post_init__
_ORIGINAL_RAW_GET = Message.__dict__["_Message__raw_get"]
_object_get = object.__getattribute__
_object_set = object.__setattr__

# message class -> True when it has no oneof groups (the fast path applies); filled on first use.
_PLAIN: dict[type, bool] = {}
# plain message class -> its fields as (name, optional), for __post_init__; filled on first use.
_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}
# type of a value set on a message -> whether it is a Message (see _setattr); filled on first use.
_IS_MESSAGE: dict[type, bool] = {}
# message class -> the dataclass __init__ that _fast_init replaced (put back by uninstall()).
_ORIGINAL_INITS: dict[type, Any] = {}
_installed = False


def _plain(cls: type) -> bool:
    meta = cls._betterproto  # the class property: computes and caches the metadata
    # A plain class attribute from now on: later lookups skip the class property's Python call.
    type.__setattr__(cls, "_betterproto", meta)
    plain = _PLAIN[cls] = not meta.oneof_group_by_field
    if plain and _installed:
        _fast_init(cls)
    return plain


def _fast_init(cls: type) -> None:
    """Give the plain message class `cls` a constructor that skips `__setattr__` (see the module docstring)."""
    if cls in _ORIGINAL_INITS or "__init__" not in cls.__dict__ or not dataclasses.is_dataclass(cls):
        return
    fields = dataclasses.fields(cls)
    meta = cls._betterproto.meta_by_field_name
    if [f.name for f in fields] != list(meta) or any(f.default is dataclasses.MISSING or not f.init
                                                     for f in fields):
        return  # not the shape betterproto generates: keep the dataclass constructor
    names = [f.name for f in fields]
    if any(not n.isidentifier() or n in ("self", "d", "_d", "_get", "_Message") for n in names):  # names used below
        return
    lines = [f"def __init__(self, {', '.join(f'{n}=_d[{i}]' for i, n in enumerate(names))}):",
             "    d = _get(self, '__dict__')"]
    lines += [f"    d[{n!r}] = {n}" for n in names]
    for n in names:
        if meta[n].proto_type == betterproto.TYPE_MESSAGE and not meta[n].map_types:
            # As Message.__setattr__: an empty (field-less) message given as a value counts as set.
            lines.append(f"    if isinstance({n}, _Message) and not type({n})._betterproto.meta_by_field_name:")
            lines.append(f"        {n}._serialized_on_wire = True")
    lines.append("    self.__post_init__()")
    namespace: dict[str, Any] = {"_d": tuple(f.default for f in fields), "_get": _object_get, "_Message": Message}
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from the class's own field names, as dataclasses does
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    _ORIGINAL_INITS[cls] = cls.__dict__["__init__"]
    type.__setattr__(cls, "__init__", init)


def _getattribute(self: Message, name: str) -> Any:
    cls = type(self)
    plain = _PLAIN.get(cls)
    if plain is None:
        plain = _plain(cls)
    if not plain:
        return _ORIGINAL_GETATTRIBUTE(self, name)
    value = _object_get(self, name)
    if value is not PLACEHOLDER:
        return value
    # As the original: an unset field gets its default on first read (lazily, for recursive message types).
    value = self._get_field_default(name)
    _object_set(self, name, value)
    return value


def _setattr(self: Message, attr: str, value: Any) -> None:
    cls = type(self)
    plain = _PLAIN.get(cls)
    if plain is None:
        plain = _plain(cls)
    if not plain:
        _ORIGINAL_SETATTR(self, attr, value)
        return
    # As the original: an empty message assigned to a field counts as set; any field set marks the message
    # as serialized on the wire.  (The oneof bookkeeping the original does next is empty for this class.)
    # isinstance(value, Message) goes through ABCMeta.__instancecheck__ (three calls) for every field a decode
    # sets; whether a type is a Message is asked once per type instead.
    kind = type(value)
    is_message = _IS_MESSAGE.get(kind)
    if is_message is None:
        is_message = _IS_MESSAGE[kind] = isinstance(value, Message)
    if is_message and not value._betterproto.meta_by_field_name:
        value._serialized_on_wire = True
    if attr != "_serialized_on_wire":
        _object_get(self, "__dict__")["_serialized_on_wire"] = True
    _object_set(self, attr, value)


def _post_init(self: Message) -> None:
    cls = type(self)
    fields = _FIELDS.get(cls)
    if fields is None:
        plain = _PLAIN.get(cls)
        if plain is None:
            plain = _plain(cls)
        if not plain:
            _ORIGINAL_POST_INIT(self)
            return
        fields = _FIELDS[cls] = tuple((name, meta.optional)
                                      for name, meta in cls._betterproto.meta_by_field_name.items())
    # As the original for a class without groups: the message counts as serialized on the wire when any field
    # was given a value (an optional field given None does not count); no unknown fields; no group selected.
    d = _object_get(self, "__dict__")
    on_wire = False
    for name, optional in fields:
        value = d[name]
        if value is not PLACEHOLDER and not (optional and value is None):
            on_wire = True
            break
    d["_serialized_on_wire"] = on_wire
    d["_unknown_fields"] = b""
    d["_group_current"] = {}


def install() -> None:
    """Switch betterproto's Message to the faster attribute access (idempotent)."""
    global _installed
    if _installed:
        return
    Message.__getattribute__ = _getattribute  # type: ignore[method-assign]
    Message.__setattr__ = _setattr  # type: ignore[method-assign]
    Message.__post_init__ = _post_init  # type: ignore[method-assign]
    if Message.__mro__[1:] == (abc.ABC, object) and "__getattribute__" not in abc.ABC.__dict__:
        # Then super() in Message is object: __raw_get is object.__getattribute__ plus a frame.
        type.__setattr__(Message, "_Message__raw_get", object.__getattribute__)
    _installed = True


def uninstall() -> None:
    """Back to betterproto's own methods (tests compare both)."""
    global _installed
    Message.__getattribute__ = _ORIGINAL_GETATTRIBUTE  # type: ignore[method-assign]
    Message.__setattr__ = _ORIGINAL_SETATTR  # type: ignore[method-assign]
    Message.__post_init__ = _ORIGINAL_POST_INIT  # type: ignore[method-assign]
    type.__setattr__(Message, "_Message__raw_get", _ORIGINAL_RAW_GET)
    for cls, init in _ORIGINAL_INITS.items():
        type.__setattr__(cls, "__init__", init)
    _ORIGINAL_INITS.clear()
    _PLAIN.clear()  # so that install() gives the fast constructors again, on first use
    _installed = False


def installed() -> bool:
    """Whether `install()` is in effect."""
    return _installed


