"""Click parameter types the commands share."""

from __future__ import annotations

import importlib
from typing import Any

import click


class ServiceChoice(click.Choice[str]):
    """One of the names a service module defines (`module.attribute`, a tuple of strings).

    The tuple is read the first time the option is parsed or its help is shown, not when the
    command line is built: the services import the database layer, which `gptactions --help`
    and most commands' start-up do not need.
    """

    def __init__(self, module: str, attribute: str) -> None:
        self._where = (module, attribute)
        self.case_sensitive = True

    def __getattr__(self, name: str) -> Any:
        # Reached only while `choices` is unset (a normal attribute afterwards).
        if name != "choices":
            raise AttributeError(name)
        module, attribute = self._where
        self.choices = tuple(getattr(importlib.import_module(module), attribute))
        return self.choices
