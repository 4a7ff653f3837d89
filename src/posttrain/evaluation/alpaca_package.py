"""Import the optional ``alpaca_eval`` package (tatsu-lab/alpaca_eval, the ``alpaca`` extra) in one place.

posttrain calls the package's own code for three things: its win rate and length-controlled GLM
(``alpaca_eval.metrics``), its evaluator configurations and completion parsers (``evaluators_configs/*/configs.yaml``,
``alpaca_eval.completion_parsers``). Two quirks of alpaca_eval 0.6.6 are handled here rather than at every call site:

- it imports ``pkg_resources`` (for ``parse_version`` and ``get_distribution(name).version`` only), which
  setuptools >= 82 no longer ships; when that module is missing, a stand-in with those two functions (from
  ``packaging`` and ``importlib.metadata``) is registered before the import;
- importing it sets the root logger to INFO (``annotators/base.py``), which would make every library chatty; the
  previous level is put back.

Without the package, ``require`` raises a one-line ``ConfigError`` that says how to install it, and ``available``
lets callers fall back to a labelled "not computed".
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import sys
import types

from ..errors import ConfigError

INSTALL_HINT = "pip install -e \".[alpaca]\" (or bash scripts/setup.sh)"


def _register_pkg_resources_stand_in() -> None:
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        return
    from packaging.version import parse

    stand_in = types.ModuleType("pkg_resources")
    # a spec, so importlib.util.find_spec("pkg_resources") answers instead of raising on a spec-less module
    stand_in.__spec__ = importlib.machinery.ModuleSpec("pkg_resources", None)
    stand_in.parse_version = parse
    stand_in.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
    sys.modules["pkg_resources"] = stand_in


def available() -> bool:
    """Whether the alpaca_eval package is installed (nothing is imported)."""
    return importlib.util.find_spec("alpaca_eval") is not None


def version() -> str | None:
    try:
        return importlib.metadata.version("alpaca-eval")
    except importlib.metadata.PackageNotFoundError:
        return None


def require(module: str = "alpaca_eval", *, needed_for: str):
    """Import ``module`` (``alpaca_eval`` or one of its submodules); a one-line error names ``needed_for``."""
    if not available():
        raise ConfigError(f"{needed_for} needs the alpaca_eval package, which is not installed: {INSTALL_HINT}")
    _register_pkg_resources_stand_in()
    root = logging.getLogger()
    level = root.level
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"{needed_for}: importing {module} failed ({err}); reinstall with {INSTALL_HINT}") from None
    finally:
        root.setLevel(level)
