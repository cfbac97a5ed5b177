"""The optional C extension that speeds up simhash fingerprints; everything else is in pyproject.toml.

`optional=True`: without a C compiler the install still succeeds and
promptmill.dedup.fingerprints uses its numpy path, which gives the same values.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("promptmill.dedup._simhash", ["lib/promptmill/dedup/_simhash.c"], optional=True,
                             extra_compile_args=["-O3"])])
