"""Lazy package inits: import the parts of a package a function uses, not everything its __init__ lists.

Powertools' `event_handler/__init__.py` imports every resolver it has (AppSync, AppSync Events, Bedrock
Agents, VPC Lattice, Lambda Function URLs...), `utilities/data_classes/__init__.py` imports all of its
forty event classes, and the top-level `__init__` imports the Tracer. A dashgate function uses the HTTP
API resolver, three data classes, the Logger and Metrics. `make bench` measured the rest at about 11 ms
of every function's cold start (51 M instructions of 1,522 M for login, counted by callgrind).

`defer_init("aws_lambda_powertools.event_handler")` puts a stand-in for the package in `sys.modules`.
Importing one of its submodules loads that submodule only. A name the package's __init__ imports
(`from aws_lambda_powertools.event_handler import APIGatewayHttpResolver`) is looked up in that
__init__'s own `from ... import` lines and loaded from the module it names; any other name (such as
`__all__`) runs the real __init__ once, so the package behaves as it always did, only later.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from typing import Any


class LazyPackage(types.ModuleType):
    """A package whose __init__ runs only when a name it defines, and no submodule gives, is asked for."""

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__
        if state.get("_lazy_loaded"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        source = state["_lazy_names"].get(name)
        if source is not None and source != self.__name__:
            value = getattr(importlib.import_module(source), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{self.__name__}.{name}") is not None:
            value = importlib.import_module(f"{self.__name__}.{name}")
        else:
            self._load()
            return getattr(self, name)
        setattr(self, name, value)
        return value

    def _load(self) -> None:
        """Run the real __init__ in this module's namespace (what a normal import would have done)."""
        self.__dict__["_lazy_loaded"] = True
        exec(self.__spec__.loader.get_code(self.__name__), self.__dict__)  # noqa: S102 - the package's own code


def defer_init(name: str) -> bool:
    """Stand in for package `name` until its __init__ is really needed; False when it is imported
    already or not installed (then nothing changes)."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None or spec.origin is None:
        return False
    module = LazyPackage(name)  # (find_spec imported the parent package, which the stand-in joins)
    module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, spec.origin
    module.__path__, module.__package__ = list(spec.submodule_search_locations), name
    module.__dict__["_lazy_names"] = _imported_names(spec.origin, name)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return True


def _imported_names(init_file: str, package: str) -> dict[str, str]:
    """name -> the module an `__init__.py` imports it from (`from .logging import Logger`)."""
    with open(init_file, encoding="utf-8") as source:
        tree = ast.parse(source.read(), init_file)
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            for alias in node.names:
                names[alias.asname or alias.name] = module
    return names
