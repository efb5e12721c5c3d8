"""ser_hf: speech emotion recognition on the Hugging Face stack.

Speaker-independent evaluation by default; every model family reports through
one macro-F1 reporter.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ser_hf")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
