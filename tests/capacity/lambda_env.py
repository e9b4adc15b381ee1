"""The purchase handler loaded as a new Lambda execution environment loads it: the handler
directory on sys.path, ``index`` imported top-level, every module a new object, the kit itself not
importable, and a /tmp of its own. Nothing one environment holds in memory or in /tmp is seen by
another."""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping
from unittest import mock

from botocore.exceptions import StubResponseError

from trn_constructs.capacity_purchase.construct import HANDLER_DIR

PACKAGE = "capacity_block"
# Compiled once, outside the source tree, so that each fresh import only executes the modules.
_BYTECODE = tempfile.mkdtemp(prefix="lambda-env-bytecode-")
atexit.register(shutil.rmtree, _BYTECODE, ignore_errors=True)


def _is_handler_module(name: str) -> bool:
    return name == "index" or name == PACKAGE or name.startswith(f"{PACKAGE}.")


def _is_kit_module(name: str) -> bool:
    return name == "trn_constructs" or name.startswith("trn_constructs.")


@contextmanager
def _cached_bytecode() -> Iterator[None]:
    saved = sys.dont_write_bytecode, sys.pycache_prefix
    sys.dont_write_bytecode, sys.pycache_prefix = False, _BYTECODE
    try:
        yield
    finally:
        sys.dont_write_bytecode, sys.pycache_prefix = saved


@contextmanager
def _isolated_modules() -> Iterator[None]:
    """No handler module loaded yet, and the kit not importable (the asset holds the handler
    directory only); sys.modules is restored on exit, so the new modules leave it too."""
    kept = [name for name in sys.modules if _is_handler_module(name) or _is_kit_module(name)]
    with mock.patch.dict(sys.modules):
        for name in kept:
            del sys.modules[name]
        sys.modules["trn_constructs"] = None
        yield


@contextmanager
def _own_tmp(directory: Path) -> Iterator[None]:
    saved = tempfile.tempdir
    tempfile.tempdir = str(directory)
    try:
        yield
    finally:
        tempfile.tempdir = saved


@dataclass
class LambdaEnvironment:
    index: ModuleType
    modules: Mapping[str, ModuleType]
    tmp: Path
    environ: dict[str, str] = field(default_factory=dict)

    def module(self, name: str) -> ModuleType:
        """One of this environment's own modules, e.g. "aws" for capacity_block.aws."""
        return self.modules[f"{PACKAGE}.{name}"]

    @property
    def Error(self) -> type[Exception]:
        return self.module("request").CapacityPurchaseError

    def on_event(self, event: Mapping[str, Any]) -> Any:
        return self._invoke(self.index.on_event, event)

    def is_complete(self, event: Mapping[str, Any]) -> Any:
        return self._invoke(self.index.is_complete, event)

    def _invoke(self, entry: Callable[..., Any], event: Mapping[str, Any]) -> Any:
        """``entry`` with this environment's variables and /tmp. A Stubber assertion the handler
        wrapped as a purchase failure is re-raised as is."""
        with mock.patch.dict(os.environ, self.environ), _own_tmp(self.tmp):
            try:
                return entry(event, None)
            except self.Error as error:
                if isinstance(error.__cause__, StubResponseError):
                    raise error.__cause__
                raise


def load(tmp: Path) -> LambdaEnvironment:
    """Import the handler afresh, as the Lambda runtime does, leaving sys.modules as it was."""
    sys.path.insert(0, str(HANDLER_DIR))
    try:
        with _own_tmp(tmp), _cached_bytecode(), _isolated_modules():
            index = importlib.import_module("index")
            modules = {n: module for n, module in sys.modules.items() if _is_handler_module(n)}
    finally:
        sys.path.remove(str(HANDLER_DIR))
    return LambdaEnvironment(index=index, modules=modules, tmp=tmp)
