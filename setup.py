"""Build the Cython kernels: every ``ext/_*.pyx`` becomes ``lego.ext._*``, every
``nfs/<nf>/_*.pyx`` (an NF's own kernel) ``lego.nfs.<nf>._*``.

Directives are set once here. ``LEGO_CYTHON_DEBUG=1`` turns bounds and wraparound
checks back on; ``LEGO_CYTHON_ANNOTATE=1`` writes the HTML annotation next to each
kernel. No ``-ffast-math``: the feature kernels must be bit-exact to their specs.
"""

import os
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("LEGO_CYTHON_DEBUG") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

def _module(path: str) -> str:
    """ext/_x.pyx -> lego.ext._x; nfs/<nf>/_x.pyx (an NF's own kernel) -> lego.nfs.<nf>._x."""
    parts = os.path.splitext(path)[0].split(os.sep)
    return ".".join(["lego"] + parts)


extensions = [
    Extension(
        _module(path),
        [path],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=(["-O2", "-g0"] if not DEBUG else ["-O0", "-g"]) + ["-ffp-contract=off"],
    )
    for path in sorted(glob("ext/_*.pyx")) + sorted(glob("nfs/*/_*.pyx"))
]



def _cython_include_path() -> str:
    """A tree in which ``ext/`` is ``lego/ext/``: Cython finds a kernel's ``.pxd`` (and
    other kernels' ``cimport lego.ext._x``) by the module's dotted name, and the
    namespace maps ``lego.ext`` onto the top-level ``ext/`` folder."""
    root = os.path.join("build", "cython-include")
    pkg = os.path.join(root, "lego")
    os.makedirs(pkg, exist_ok=True)
    open(os.path.join(pkg, "__init__.pxd"), "a").close()
    link = os.path.join(pkg, "ext")
    if not os.path.islink(link):
        os.symlink(os.path.abspath("ext"), link)
    return root


setup(
    ext_modules=cythonize(
        extensions,
        include_path=[_cython_include_path()],
        compiler_directives=directives,
        annotate=os.environ.get("LEGO_CYTHON_ANNOTATE") == "1",
    )
)
