"""Export: every table in four formats (the closed-form ones, every table a tab drew this session:
``common.shown_tables``), the whole session as one JSON file (and loading it back), and
results of ``xtlens profile`` from another machine uploaded and compared."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st
from xtlens.dashboard import charts, data, exporting, tables
from xtlens.dashboard.session import jobs, ownership, pins, restore, session_io, tab_settings, uploads
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import (
    EAGER_ROWS,
    TAB_OF_KEY,
    ShownTable,
    chart,
    download_data,
    downloads,
    drawn_for,
    shown_tables,
)
from xtlens.profiling.results import uploads as upload_boundary
from xtlens.profiling.results.export import as_frame
from xtlens.profiling.results.records import arrow_safe
from xtlens.profiling.results.uploads import MAX_UPLOAD_BYTES


def closed_form_tables(ctx: Ctx) -> dict[str, pd.DataFrame]:
    lens = tuple(tables.seq_len_grid(ctx.cfg.max_seq_len))
    out = {
        "closed-form estimate": tables.estimate_table(data.predictions(ctx.cfg, ctx.wl)),
        "predicted memory vs sequence length": data.memory_curve(ctx.cfg, ctx.wl, lens),
        "closed-form FLOPs vs sequence length": data.flops_curve(ctx.cfg, ctx.wl, lens),
    }
    for axis in tables.SWEEP_AXES:
        out[f"sweep over {axis}"] = data.sweep(ctx.cfg, ctx.wl, axis, 1e9)[0]
    return out


def measured_tables() -> list[tuple[str, pd.DataFrame]]:
    labels = ownership.session_jobs()
    return [(labels.get(key, key), frame) for key, frame in jobs.results(list(labels))]


def probe_tables() -> list[tuple[str, pd.DataFrame]]:
    """Every benefit-probe table the Benefits view can show this session: its finished probe jobs (also one another
    session started, once shown here) and uploaded probe tables."""
    from xtlens.dashboard.session import benefit_data
    from xtlens.profiling.benefit.records import PROBES

    return [(f"{probe}: {label}", frame) for probe in PROBES for label, frame in benefit_data.finished_tables(probe)]


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a is b or (a.shape == b.shape and list(a.columns) == list(b.columns) and a.equals(b))


def drawn_tables(listed: list[tuple[str, pd.DataFrame]]) -> list[tuple[ShownTable, str | None]]:
    """Every table the other tabs drew this session (``common.shown_tables``), each with the name of the table
    listed above that holds the same rows (None: none does; it gets its own downloads)."""
    return [(t, next((name for name, f in listed if _same(f, t.frame)), None))
            for t in shown_tables() if t.tab != "Export"]


def render(ctx: Ctx) -> None:
    # the sections top to bottom; the uploads are read first, so a table uploaded in this run is already listed
    # under Tables and saved with the session
    tables_box, session_box, upload_box = st.container(), st.container(), st.container()
    with upload_box:
        _upload_tables()
    measured = measured_tables()
    with tables_box:
        _tables(ctx, measured)
    with session_box:
        _session(ctx, measured)
    uploaded = uploads.uploads()
    if uploaded:
        with upload_box:
            st.button("Forget uploaded tables", key="export.clear_uploads", on_click=uploads.on_clear_uploads)
            _compare_uploads(uploaded, measured)


def _tables(ctx: Ctx, measured: list[tuple[str, pd.DataFrame]]) -> None:
    st.subheader("Tables")
    st.caption("Each table as CSV, JSON, Parquet (read back exactly) or Markdown (for reading). Measurement tables use "
               "the same columns as `xtlens profile`.")
    closed = closed_form_tables(ctx)
    for name, frame in closed.items():
        st.markdown(f"**{name}** — {len(frame)} rows")
        downloads(frame, name, f"export.{exporting.file_stem(name)}")
    _drawn(list(closed.items()))
    for i, (name, frame) in enumerate(measured):
        st.markdown(f"**measured: {name}** — {len(frame)} rows")
        downloads(frame, f"measured {name}", f"export.measured.{i}")
    for i, (name, frame) in enumerate(uploads.uploads()):
        origin = uploads.upload_origin(name)
        drawn = _drawn_in(frame)
        title = origin if origin == f"uploaded {name}" else f"{origin}: {name}"
        st.markdown(f"**{title}** — {len(frame)} rows" + (f"; drawn in {drawn}" if drawn else ""))
        downloads(frame, f"{'restored' if origin == 'restored session' else 'uploaded'} {name}",
                  f"export.uploaded.{i}")
    from xtlens.dashboard.session import benefit_data

    probes = probe_tables()
    for i, (name, frame) in enumerate(probes):
        st.markdown(f"**benefit probe: {name}** — {len(frame)} rows (shown in the Benefits view)")
        downloads(frame, f"probe {name}", f"export.probe.{i}")
        claims, problem = benefit_data.claims_of(frame)
        if claims is not None and not claims.empty:
            st.markdown(f"**claims of {name}** — {len(claims)} claim(s): verdict, estimate, 95% interval, scale "
                        "(the table `xtlens probe --summary-out` writes)")
            downloads(claims, f"claims {name}", f"export.claims.{i}")
        elif problem:
            st.caption(f"claims of {name}: {problem}")
    atlas = benefit_data.atlas_tables()
    for i, (name, frame) in enumerate(atlas):
        st.markdown(f"**benefit atlas: {name}** — {len(frame)} rows (drawn in the Benefits view)")
        downloads(frame, name, f"export.atlas.{i}")
    if not measured and not uploads.uploads() and not probes and not atlas:
        st.caption("Measured tables appear here after you press Measure in a view (uploaded and restored tables too, "
                   "which the Latency, Memory and FLOPs views also draw).")


def _drawn(listed: list[tuple[str, pd.DataFrame]]) -> None:
    st.markdown("**Tables drawn on the other tabs** (Setups, Latency's roofline, the budget grid, ...): each as its "
                "tab last drew it in this session, raw numbers with units in the column names.")
    drawn = drawn_tables(listed)
    now = drawn_for()
    for t, same in drawn:
        note = f"{len(t.frame)} rows, drawn at {t.drawn_at}"
        if t.drawn_for != now:
            note += " for another configuration or workload than the sidebar's now (open the tab to redraw it)"
        if same is not None:
            st.markdown(f"**{t.tab}: {t.title}** — {note}; the same table as **{same}** above")
            continue
        st.markdown(f"**{t.tab}: {t.title}** — {note}")
        downloads(t.frame, f"{t.tab} {t.title}", f"export.shown.{t.key}")
    seen = {t.tab for t, _ in drawn}
    missing = [tab for tab in dict.fromkeys(TAB_OF_KEY.values()) if tab != "Export" and tab not in seen]
    if missing:
        st.caption("No table drawn yet in this session on: " + ", ".join(missing) + ". Open a tab and its tables are "
                   "listed here.")


def _session(ctx: Ctx, measured: list[tuple[str, pd.DataFrame]]) -> None:
    st.subheader("Whole session")
    snap = session_io.make(ctx.cfg, ctx.wl, ctx.device, [(p.name, p.config) for p in pins.pinned()],
                           measured + uploads.uploads(), settings=tab_settings.kept_settings())
    rows = sum(len(f) for _, f in snap.results)
    st.download_button("Download session (JSON)", data=download_data(partial(session_io.to_json, snap), rows <= EAGER_ROWS),
                       file_name="xtlens-session.json",
                       mime="application/json", key="export.session", on_click="ignore", icon=":material/download:")
    up = st.file_uploader("Load a session file", type=["json"], key="export.session_upload",
                          help=f"At most {MAX_UPLOAD_BYTES // 2**20} MiB.")
    if up is not None:
        try:
            loaded = upload_boundary.cached("session file", up.name, up.getvalue(), session_io.from_json)
        except ValueError as exc:
            st.error(f"{up.name}: {exc}")
        else:
            st.button(f"Restore it ({len(loaded.pins)} pin(s), {len(loaded.results)} table(s))",
                      key="export.restore", on_click=restore.on_restore_session, args=(loaded,), type="primary")


def _upload_tables() -> None:
    st.subheader("Compare with results from another machine")
    st.caption("Upload a .csv, .json or .parquet written by `xtlens profile --out FILE` (or downloaded here); at most "
               f"{MAX_UPLOAD_BYTES // 2**20} MiB per file. Each file is checked (columns, statuses, non-negative "
               "counts) and a file that fails is named and skipped; the others are still read. Latency, memory and "
               "FLOP rows are drawn in their views, labelled by configuration and file.")
    files = st.file_uploader("Result tables", type=["csv", "json", "parquet"], accept_multiple_files=True,
                             key="export.results_upload")
    for f in files or []:
        if not uploads.new_upload(f.file_id):  # read once: "Forget uploaded tables" is not undone by the next rerun
            continue
        try:
            frame = upload_boundary.read_table_upload(f.name, f.getvalue(), f.name.rsplit(".", 1)[-1].lower())
        except ValueError as exc:
            st.error(str(exc))
            uploads.forget_upload_id(f.file_id)  # the message stays while the file is in the box
            continue
        uploads.add_upload(f.name, frame)
        _store_upload(f.name, f.getvalue(), frame)


VIEW_OF = {"latency": "Latency", "memory": "Memory", "flops": "FLOPs"}


def _drawn_in(frame: pd.DataFrame) -> str:
    """The views that draw this table's rows (``other_runs``): Latency, Memory, FLOPs."""
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame.iloc[0:0]
    present = set(ok["measurement"]) if "measurement" in ok else set()
    return ", ".join(f"the {v} view" for m, v in VIEW_OF.items() if m in present)


def _store_upload(name: str, content: bytes, frame: pd.DataFrame) -> None:
    """Uploaded results go into the results database too (once per file content; see the History tab)."""
    from xtlens.profiling.results.records import from_frame
    from xtlens.profiling.results.store import StoreError, open_store

    try:
        open_store().import_once(from_frame(frame), content, name=name)
    except StoreError as exc:
        st.warning(f"{name} is compared here but not stored: {exc}")


def _compare_uploads(uploaded: list[tuple[str, pd.DataFrame]], measured: list[tuple[str, pd.DataFrame]]) -> None:
    frames = [as_frame(f).assign(source=f"{uploads.upload_origin(n)}: {n}") for n, f in uploaded]
    frames += [as_frame(f).assign(source="this machine") for _, f in measured]
    allrows = pd.concat(frames, ignore_index=True)
    ok = allrows[allrows["status"] == "ok"]
    st.caption(f"{len(allrows)} rows from {len(frames)} table(s); devices: "
               + ", ".join(sorted(allrows["device_name"].dropna().unique())))
    lat = ok[(ok["measurement"] == "latency") & (ok["phase"] == "forward")].copy()
    if not lat.empty:
        lat["series"] = lat["device_name"].astype(str) + " / " + lat["config_name"].astype(str)
        chart(charts.latency_loglog(lat, title="Forward latency by machine (median)"), "upload_lat")
    mem = ok[ok["measurement"] == "memory"]
    if not mem.empty:  # each machine's rows joined to their configuration's prediction (not the file's own column)
        parts = []
        kind = tables.row_kind(mem)  # simulated memory (MemTracker under FakeTensorMode) is never called measured
        for (device, how), rows in mem.groupby([mem["device_name"].astype(str), kind], sort=False):
            joined = tables.measured_vs_predicted_memory(rows)
            joined = joined[joined["component"] == "total"]
            where = device + (" (simulated)" if how == "simulated" else "")
            parts.append(joined.assign(phase=where + " / " + joined["phase"].astype(str), measured_label=how))
        both = pd.concat(parts, ignore_index=True)
        kinds = " or ".join(sorted(set(kind)))
        chart(charts.measured_vs_predicted(
            both[["seq_len_tokens", "phase", "predicted_bytes", "measured_bytes", "measured_label"]],
            title=f"Peak memory by machine: {kinds} vs predicted"), "upload_mem")
    st.dataframe(arrow_safe(allrows), hide_index=True, width="stretch", key="df.export.uploads")
