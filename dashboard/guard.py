"""No traceback ever reaches a user: Streamlit's error details are off and each view renders inside ``view``.

``hide_error_details`` sets ``client.showErrorDetails = "none"`` (also in ``.streamlit/config.toml`` and on
``xtlens dashboard``'s command line), so even an error outside a view shows no trace or server path.
``view`` catches what a view raises: a project error (``XtlensError``, whose message is written for the
user) is shown as it is; anything else is logged with its traceback on the server and the page says which
view failed, in words. Streamlit's own control flow (``st.rerun``, ``st.stop``) is a ``BaseException`` and
passes through.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import streamlit as st
from xtlens.core.config import XtlensError

log = logging.getLogger("xtlens.dashboard")


def hide_error_details() -> None:
    st.set_option("client.showErrorDetails", "none")


@contextlib.contextmanager
def view(name: str) -> Iterator[None]:
    try:
        yield
    except XtlensError as exc:
        log.info("view %s: %s", name, exc)
        st.error(f"{name}: {exc}")
    except Exception as exc:  # noqa: BLE001 - the page must stay usable; the server log has the traceback
        log.exception("view %s failed", name)
        st.error(f"The {name} view could not be drawn for this configuration ({type(exc).__name__}). The other "
                 "tabs still work; the details are in the server's log.")
