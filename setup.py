"""Build of the optional C modules (everything else is in pyproject.toml).

audio._speedups (G.711, frame levels) and firmware.runtime._udp (the RTP socket read) take the
per-packet steps of a call out of the interpreter (bench/README.md). `optional=True`: a machine
without a C compiler or Python headers still installs deskphone and runs the same code paths
on their Python twins (audio/speedups.py, firmware/runtime/udp.py), only at a higher CPU cost.
"""

from setuptools import Extension, setup

FLAGS = [
    "-O2",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
    "-D_GNU_SOURCE",
]

setup(
    ext_modules=[
        Extension(name, [source], extra_compile_args=FLAGS, optional=True)
        for name, source in (
            ("audio._speedups", "audio/_speedups.c"),
            ("firmware.runtime._udp", "firmware/runtime/_udp.c"),
        )
    ]
)
