"""The sidebar's "Run measurements on" setting: this machine (a child process) or a Ray cluster.

The choice lives under the ``run.*`` widget keys; ``session.jobs`` reads it (``run_on``) when a view asks
for a measurement. The cluster summary (nodes, CPUs, GPUs) is cached for 30 s so the page does not ask
the cluster on every rerun.
"""

from __future__ import annotations

import os

import streamlit as st
from xtlens.dashboard.session import store

RUN_ON_KEY = "run.on"
RAY_ADDRESS_KEY = "run.ray_address"
RAY_DEVICE_KEY = "run.ray_device"
RUN_ON_CHOICES = ("this machine", "Ray cluster")
RAY_DEVICES = {"auto": "auto (a GPU per point when the cluster has GPUs)", "cuda": "cuda (one GPU per point)",
               "cpu": "cpu (one CPU per point)"}


@st.cache_data(ttl=30, show_spinner="asking the Ray cluster what it has")
def cluster_info(address: str) -> tuple[dict | None, str | None]:
    """(nodes/cpus/gpus/hosts, None) or (None, the reason it cannot be used)."""
    from xtlens.profiling.run.executor import RayUnavailable, describe

    try:
        return describe(address), None
    except RayUnavailable as exc:
        return None, str(exc)


def run_on() -> tuple[str | None, str | None]:
    """``(Ray address, device on the cluster)``, or ``(None, None)`` for this machine."""
    if store.get(RUN_ON_KEY) != RUN_ON_CHOICES[1]:
        return None, None
    address = str(store.get(RAY_ADDRESS_KEY) or "").strip() or "auto"
    return address, str(store.get(RAY_DEVICE_KEY) or "auto")


def sidebar() -> None:
    with st.sidebar:
        st.header("Run measurements on")
        st.radio("Run measurements on", RUN_ON_CHOICES, key=RUN_ON_KEY, horizontal=True,
                 label_visibility="collapsed",
                 help="This machine: a child process here, one point after the other. Ray cluster: one Ray task per "
                      "point, in parallel across the cluster (see the README's 'Sweeps on a Ray cluster').")
        address, _ = run_on()
        if address is None:
            return
        st.text_input("Ray cluster address", value=os.environ.get("RAY_ADDRESS") or "auto", key=RAY_ADDRESS_KEY,
                      help="host:port of the head node (printed by `ray start --head`), ray://host:10001, or auto "
                           "($RAY_ADDRESS, else the cluster started on this machine).")
        st.selectbox("device on the cluster", list(RAY_DEVICES), format_func=RAY_DEVICES.get, key=RAY_DEVICE_KEY,
                     help="Replaces the device above for measurements on the cluster. Rows carry the device name "
                          "each worker saw.")
        info, error = cluster_info(address)
        if error:
            st.error(f"{error}. Measurements cannot run there until it is reachable; choose 'this machine' meanwhile.")
        else:
            st.caption(f"Ray cluster at {address}: {info['nodes']} node(s), {info['cpus']:g} CPU(s), "
                       f"{info['gpus']:g} GPU(s) — {', '.join(info['hosts'])}")
