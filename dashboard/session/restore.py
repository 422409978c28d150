"""Restoring a saved session file (``session_io.Snapshot``): the configuration and workload into the widgets,
the pins, the result tables and the tab settings. A widget callback of the Export tab."""

from __future__ import annotations

from xtlens.dashboard.session import loading, pins, tab_settings, uploads, widgets
from xtlens.dashboard.session.session_io import Snapshot


def on_restore_session(snapshot: Snapshot) -> None:
    """Load a ``session_io.Snapshot``: current config and workload into the widgets, pins, result tables."""
    widgets.write_config_values(snapshot.config.to_dict())
    widgets.write_workload(seq_len=snapshot.workload.seq_len, batch=snapshot.workload.batch,
                           dtype=snapshot.workload.dtype)
    widgets.choose_device(snapshot.device)
    pins.replace_pins([(p.name, p.config) for p in snapshot.pins])
    for name, frame in snapshot.results:
        uploads.add_upload(name, frame, origin="restored session")
    notes: list[str] = []
    tab_settings.restore_settings(dict(snapshot.settings), notes)  # checked again: a NaN never reaches a widget
    loading.set_source_note("ok", f"Restored a saved session ({len(snapshot.pins)} pinned configuration(s), "
                                  f"{len(snapshot.results)} result table(s))." + "".join(f" {n}" for n in notes))
