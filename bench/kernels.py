"""Kernel benchmark from a checkout: same as `gguf-engine bench --kernels [-m MODEL]`."""

import sys

from gguf_engine.cli import main

sys.exit(main(["bench", "--kernels", *sys.argv[1:]]))
