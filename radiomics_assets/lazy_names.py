"""A package's public names loaded on first use (PEP 562): its ``__init__`` says which submodule holds each name,
so importing the package, or one light submodule of it, does not import the heavy ones (``modelling``: scikit-learn,
SciPy, matplotlib; ``features``: PyRadiomics and the compiled kernels; ``batch``: the driver's readers)."""

import importlib
import sys


def lazy_names(package: str, module_of: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``: a name of ``module_of`` is imported from ``<package>.<module>``
    the first time it is asked for, then kept in the package like an ordinary attribute."""

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *module_of})

    return __getattr__, __dir__
