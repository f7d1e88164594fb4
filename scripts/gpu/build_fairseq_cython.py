"""Build only fairseq's two Cython extensions in place, from the fairseq source folder.

Training needs just these two (batching and token blocks); fairseq's own `setup.py
build_ext -j` breaks because its parallel ninja builds share one build file.
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

NAMES = ["fairseq.data.data_utils_fast", "fairseq.data.token_block_utils_fast"]
EXTENSIONS = [
    Extension(
        name,
        [name.replace(".", "/") + ".pyx"],
        include_dirs=[numpy.get_include()],
        language="c++",
        extra_compile_args=["-std=c++11", "-O2"],
    )
    for name in NAMES
]
setup(
    name="fairseq_cython",
    script_args=["build_ext", "--inplace"],
    ext_modules=cythonize(EXTENSIONS),
)
