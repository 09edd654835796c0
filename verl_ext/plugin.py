"""Entry point of the ``verl.plugins`` group: verl imports this module on ``import verl``.

verl logs a failing plugin only at debug level, so a broken install would pass unnoticed;
we log the error loudly before re-raising.
"""

import logging

try:
    import verl_ext  # noqa: F401
except Exception:  # pragma: no cover - only on a broken install
    logging.getLogger("verl_ext").exception("verl_ext failed to register its plugins with verl")
    raise
