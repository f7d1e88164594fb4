"""Build, in place in the fairseq source folder, the three extensions training and evaluation use.

The two Cython ones (batching and token blocks) for training, and libbleu, the C++ BLEU scorer
that fairseq-generate builds by default (scripts/evaluate.py scores with sacrebleu, but
fairseq-generate stops without it). fairseq's own `setup.py build_ext -j` breaks because its
parallel ninja builds share one build file, and it would also build the torch extensions.
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

CYTHON = ["fairseq.data.data_utils_fast", "fairseq.data.token_block_utils_fast"]
FLAGS = ["-std=c++11", "-O2"]
LIBBLEU = Extension(
    "fairseq.libbleu",
    ["fairseq/clib/libbleu/libbleu.cpp", "fairseq/clib/libbleu/module.cpp"],
    extra_compile_args=FLAGS,
)
EXTENSIONS = [
    Extension(
        name,
        [name.replace(".", "/") + ".pyx"],
        include_dirs=[numpy.get_include()],
        language="c++",
        extra_compile_args=FLAGS,
    )
    for name in CYTHON
]
setup(
    name="fairseq_extensions",
    script_args=["build_ext", "--inplace"],
    ext_modules=[*cythonize(EXTENSIONS), LIBBLEU],
)
