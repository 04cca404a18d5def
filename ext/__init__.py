"""Cython kernels and their Python wrappers (``lego.ext``).

Each kernel ``_x.pyx`` sits next to its public wrapper ``x.py``.
"""

from lego.errors import BuildError


def require_built(module_name: str):
    """Import a compiled kernel, or raise a BuildError that says how to build it."""
    import importlib

    try:
        return importlib.import_module(f"lego.ext.{module_name}")
    except ImportError as exc:
        raise BuildError(
            f"the compiled kernel lego.ext.{module_name} is not built ({exc}); "
            "run `make build` (or `pip install -e .`) in the repository root"
        ) from exc
