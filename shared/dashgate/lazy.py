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
import threading
import types
from typing import Any

#: One real __init__ at a time (`make run` serves functions in threads of one process).
_LOADING = threading.RLock()


class LazyPackage(types.ModuleType):
    """A package whose __init__ runs only when a name it defines, and no submodule gives, is asked for."""

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__
        if state.get("_lazy_loaded"):
            with _LOADING:  # another thread may be running the real __init__: wait for it to finish
                if name in state:
                    return state[name]
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        source = state["_lazy_names"].get(name)
        if source is not None and source[0] != self.__name__:
            value = getattr(importlib.import_module(source[0]), source[1])
        elif not name.startswith("__") and importlib.util.find_spec(f"{self.__name__}.{name}") is not None:
            value = importlib.import_module(f"{self.__name__}.{name}")
        else:
            self._load()
            return getattr(self, name)
        setattr(self, name, value)
        return value

    def _load(self) -> None:
        """Run the real __init__ in this module's namespace (what a normal import would have done)."""
        with _LOADING:
            if self.__dict__.get("_lazy_loaded"):
                return
            self.__dict__["_lazy_loaded"] = True  # (names the __init__ asks of itself while it runs are its own)
            try:
                exec(self.__spec__.loader.get_code(self.__name__), self.__dict__)  # noqa: S102 - the package's code
            except BaseException:
                self.__dict__["_lazy_loaded"] = False  # as a failed import: the next use tries again
                raise


def defer_init(name: str, names: dict[str, str] | None = None) -> bool:
    """Stand in for package `name` until its __init__ is really needed; False when it is imported
    already or not installed (then nothing changes). `names` (name -> module) are where names the
    __init__ star-imports come from (`from .events import *`), which its own text does not say."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None or spec.origin is None:
        return False
    module = LazyPackage(name)  # (find_spec imported the parent package, which the stand-in joins)
    module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, spec.origin
    module.__path__, module.__package__ = list(spec.submodule_search_locations), name
    module.__dict__["_lazy_names"] = ({alias: (source, alias) for alias, source in names.items()} if names is not None
                                      else _imported_names(spec.origin, name))
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return True


def _imported_names(init_file: str, package: str) -> dict[str, tuple[str, str]]:
    """name -> the module an `__init__.py` imports it from and its name there (`from .logging import
    Logger`, `from .x import A as B`)."""
    with open(init_file, encoding="utf-8") as source:
        tree = ast.parse(source.read(), init_file)
    names: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            for alias in node.names:
                names[alias.asname or alias.name] = (module, alias.name)
    return names


def defer_powertools() -> None:
    """Load only the Powertools modules a dashgate function uses (before its first Powertools import).

    - the top-level __init__ imports the Tracer, and the Logger, which imports `jmespath_utils`;
    - `jmespath_utils` (and jmespath, gzip) serve `correlation_id_path` and envelopes, which dashgate does
      not use (`Runtime.correlated` reads the request id itself);
    - `event_handler` and `utilities.data_classes`: see the module's docstring.

    What the top-level __init__ does besides importing is kept: Powertools' own log messages are
    discarded unless POWERTOOLS_DEBUG is set (`set_package_logger_handler`). Its `inject_user_agent`
    (a tag on boto3 requests) is not: no dashgate request path uses boto3."""
    top = defer_init("aws_lambda_powertools")
    defer_init("aws_lambda_powertools.utilities.jmespath_utils")
    if top:
        from aws_lambda_powertools.package_logger import set_package_logger_handler

        set_package_logger_handler()
    defer_init("aws_lambda_powertools.event_handler")
    defer_init("aws_lambda_powertools.utilities.data_classes")


#: The asyncio names psycopg's modules import for their async half (`from asyncio import CancelledError`),
#: and the submodule each comes from. A sync-only function then never runs asyncio's __init__, which
#: imports the event loops, streams and subprocess support (25 M instructions of login's import).
PSYCOPG_ASYNCIO_NAMES = {
    "CancelledError": "asyncio.exceptions", "Future": "asyncio.futures", "get_running_loop": "asyncio.events",
    "sleep": "asyncio.tasks", "Task": "asyncio.tasks", "Lock": "asyncio.locks", "Queue": "asyncio.queues",
}
