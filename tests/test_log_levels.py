"""At GPTACTIONS_LOG_LEVEL=debug the server's own lines come out, not those of the libraries
that quote what the access log redacts (aiosqlite's statements with their parameters)."""

from __future__ import annotations

import io
import logging
import logging.config

from gptactions.serving import QUIET_AT_DEBUG, log_config


def test_at_debug_the_libraries_that_quote_secrets_stay_quiet() -> None:
    stream = io.StringIO()
    config = log_config("debug")
    config["handlers"]["app"]["stream"] = stream
    names = ("", *QUIET_AT_DEBUG, "gptactions.test")
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name in names
        for logger in [logging.getLogger(name)]
    }
    logging.config.dictConfig(config)
    try:
        logging.getLogger("aiosqlite").debug("executing MATCH ('\"secretword\"')")
        logging.getLogger("gptactions.test").debug("the server's own debug line")
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
    written = stream.getvalue()
    assert "the server's own debug line" in written
    assert "secretword" not in written
