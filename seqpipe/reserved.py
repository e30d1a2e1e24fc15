"""Names a plugin class may not reuse: the members of the contract it implements.

A plugin that defines a contract member as something else breaks without a word. A method where the
contract reads an attribute (or the reverse) fails far from its cause; a submodule stored under a
contract method's name (``self.layers = nn.ModuleList(...)`` in a topology, whose contract has
``layers()``) is silently shadowed by that method, since torch keeps submodules where ordinary
attribute lookup never looks first. Both are named here, at registration and when the model is built.
Torch-free: encodings and predictors are checked in serving too.
"""

from __future__ import annotations

import types
from typing import Any

CALLABLE_KINDS = (types.FunctionType, classmethod, staticmethod)


def _members(contract: type) -> dict[str, Any]:
    """The public members the contract (and the seqpipe classes it derives from) defines."""
    members: dict[str, Any] = {}
    for cls in reversed(contract.__mro__):
        if cls.__module__.split(".")[0] == "seqpipe":
            members.update({name: value for name, value in vars(cls).items() if not name.startswith("_")})
    return members


def _is_method(value: Any) -> bool:
    return isinstance(value, CALLABLE_KINDS)


def _shown(value: Any) -> str:
    return "a method" if _is_method(value) else "an attribute"


def class_clash(cls: type, contract: type) -> str | None:
    """Why ``cls`` redefines a member of ``contract`` as another kind (a method for an attribute, or
    an attribute for a method), or None."""
    for name, theirs in _members(contract).items():
        owner = next((c for c in cls.__mro__ if name in vars(c)), None)
        if owner is None or owner in contract.__mro__:
            continue
        ours = vars(owner)[name]
        if _is_method(ours) != _is_method(theirs):
            return (
                f"{owner.__qualname__}.{name} is {_shown(ours)}, but '{name}' is {_shown(theirs)} of the "
                f"{contract.__name__} contract, which the engine uses: rename yours"
            )
    return None


def instance_clash(obj: Any, contract: type) -> str | None:
    """Why a built torch module stores a submodule, parameter or buffer under a member name of
    ``contract`` (where the contract's member shadows it), or None."""
    members = _members(contract)
    for store in ("_modules", "_parameters", "_buffers"):
        for name in getattr(obj, store, {}) or {}:
            if name in members:
                return (
                    f"{type(obj).__qualname__} stores a {store[1:-1]} as self.{name}, but '{name}' is "
                    f"{_shown(members[name])} of the {contract.__name__} contract, so self.{name} "
                    f"reads the contract's, not yours: rename yours"
                )
    return None
