"""xtlens dashboard entry point: ``xtlens dashboard`` (or ``streamlit run dashboard/app.py``; the
installed package ``xtlens`` provides every import, no ``sys.path`` edit).

Page setup and navigation only: the sidebar (``controls``) fills the configuration, ``session.widgets`` turns
it into a ``ModelConfig`` and ``Workload`` (or the error that names the field), and the open tab's
view renders. Only the open tab runs.
"""

from __future__ import annotations

import importlib

import streamlit as st
from xtlens.core.config import Workload
from xtlens.dashboard import controls, data, guard, style
from xtlens.dashboard.session import jobs, run_on, url, widgets
from xtlens.dashboard.session.colours import config_colours
from xtlens.dashboard.views import Ctx

# tab -> its module in xtlens.dashboard.views, imported when the tab first opens: a new server's first screen (the
# Overview) imports no other view, nor what they need (torch through the Benefits tab's probes, among others)
VIEWS = {
    "Overview": "overview",
    "FLOPs": "flops",
    "Memory": "memory",
    "Latency": "latency",
    "Trade-offs": "tradeoffs",
    "Benefits": "benefits",
    "Setups": "setups",
    "Compare": "compare",
    "Export": "export",
    "History": "history",
}

style.page_setup()  # st.set_page_config and the page-wide CSS (narrow screens)
guard.hide_error_details()

device_labels = dict(data.devices())
url.start_session(default_wl=Workload(), devices=list(device_labels), views=list(VIEWS))
slots = controls.sidebar(device_labels)
run_on.sidebar()
tray_slot = st.sidebar.container()  # the job tray, drawn after the view (which may have just started a job)
cfg, cfg_error = widgets.read_config()
wl, wl_error = widgets.read_workload(cfg)
errors = [e for e in (cfg_error, wl_error) if e is not None]
controls.show_errors(slots, errors)

st.title("xtlens: what an x-transformers decoder costs")
for note in url.url_notes():
    st.warning(note)

if errors or cfg is None or wl is None:
    st.error("This configuration is not valid, so nothing is computed until it is fixed:\n\n"
             + "\n\n".join(f"- **{getattr(e, 'field', '')}**: {e}" for e in errors)
             + "\n\nThe message is also shown next to the control in the sidebar.")
else:
    device = widgets.read_device()
    url.sync_url(cfg, wl, device, widgets.current_view("Overview"))
    ctx = Ctx(cfg=cfg, wl=wl, device=device, device_label=device_labels.get(device, device))
    config_colours([("current", cfg)])  # the sidebar's configuration takes the first free colour
    keywords = {**cfg.wrapper_kwargs(), **cfg.decoder_kwargs()}
    st.caption(" · ".join(f"`{k}={v}`" for k, v in keywords.items())
               + f" — workload: batch {wl.batch} x {wl.seq_len:,} tokens, {wl.dtype}, measurements on {device}")
    tabs = st.tabs(list(VIEWS), key=widgets.VIEW_KEY, on_change="rerun")
    for tab, (name, module) in zip(tabs, VIEWS.items(), strict=True):
        if tab.open:
            with tab, guard.view(name):
                importlib.import_module(f"xtlens.dashboard.views.{module}").render(ctx)
    url.sync_url(cfg, wl, device, widgets.current_view("Overview"))  # again: the view's own settings
with tray_slot:
    jobs.tray()
