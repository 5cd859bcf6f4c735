"""gptactions: a self-hosted server for the GPT Actions API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gptactions")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
