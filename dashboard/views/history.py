"""History: every result in the result database (``profiling.results.store``), filtered, and series from different
machines compared in the usual charts.

A *series* is the rows of one configuration (by its ``config_key``, never by the name it was stored under) measured
on one device (by name) in one dtype, measured or simulated, e.g. "seed · dim=80 · NVIDIA H100 80GB HBM3 · bfloat16";
its configuration is named by ``core.presets.config_label`` (its differences to the nearest preset), so rows
stored as "current" by older versions of the page fall into one series per configuration. Simulated memory (MemTracker
under FakeTensorMode, the CPU's default) is its own series, named "... · simulated". The charts draw one line per
picked series. When a point was measured more than once, the charts use its newest ``ok`` row (the table below has
them all).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st
from xtlens.core.config import ModelConfig, XtlensError
from xtlens.core.presets import config_label
from xtlens.dashboard import charts, tables
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import chart, dataframe, table
from xtlens.profiling.results.records import arrow_safe

MAX_ROWS = 50_000
DEFAULT_SERIES = 4
SUMMARY_LABELS = {"series": "series (configuration · device · dtype)", "config_key": "configuration key",
                  "stored_names": "stored as", "kind": "measured / simulated / predicted", "rows": "rows", "failed": "failed rows",
                  "shortest_tokens": "shortest (tokens)", "longest_tokens": "longest (tokens)",
                  "measured_on": "measured on", "hosts": "host(s)", "newest": "newest measurement (UTC)"}
SOURCE_WORDS = {"local": "this machine", "ray": "Ray cluster", "import": "imported file", "json-cache": "old cache"}


@st.cache_data(ttl=5, show_spinner=False)
def _load(path: str, mtime: float) -> tuple[pd.DataFrame | None, str | None]:
    from xtlens.profiling.results.store import ResultStore, StoreError

    try:
        return ResultStore(path).query(limit=MAX_ROWS), None
    except StoreError as exc:
        return None, str(exc)


def _db_state() -> tuple[str, float]:
    from xtlens.profiling.results.store import db_path

    path = db_path().resolve()
    try:
        wal = path.with_name(path.name + "-wal")
        mtime = max(path.stat().st_mtime, wal.stat().st_mtime if wal.exists() else 0.0)
    except OSError:
        mtime = 0.0
    return str(path), mtime


# --- pure helpers (tested without Streamlit) -----------------------------------------------------------

def readable_names(frame: pd.DataFrame) -> pd.Series:
    """Per row, the readable name of its configuration: ``config_label`` of the stored ``config_json`` (e.g.
    ``seed · dim=80``), whatever name the row was stored under ("current", a preset it was derived from); with
    `` [config_key]`` where the name alone does not single the configuration out (more than 4 differences, or two
    stored keys with one name). A row whose configuration cannot be rebuilt keeps its stored name plus its key."""
    pairs = frame[["config_key", "config_json", "config_name"]].astype(str).drop_duplicates("config_key")
    names: dict[str, str] = {}
    for key, text, stored in pairs.itertuples(index=False):
        try:
            label = config_label(ModelConfig.from_json(text))
        except (XtlensError, ValueError, TypeError, KeyError):
            names[key] = f"{stored} [{key}]"
            continue
        names[key] = f"{label} [{key}]" if label.endswith(" more") else label
    keys_of: dict[str, list[str]] = {}
    for key, name in names.items():
        keys_of.setdefault(name, []).append(key)
    names = {k: (f"{n} [{k}]" if len(keys_of[n]) > 1 and not n.endswith("]") else n) for k, n in names.items()}
    return frame["config_key"].astype(str).map(names)


def series_label(frame: pd.DataFrame) -> pd.Series:
    """``configuration · device name · dtype`` per row, and `` · simulated`` for simulated memory: one label per
    series key (``config_key``, device name, dtype, measured or simulated), the configuration named by
    ``readable_names``."""
    kind = tables.row_kind(frame)
    return (readable_names(frame) + " · " + frame["device_name"].fillna("?").astype(str) + " · "
            + frame["dtype"].astype(str) + kind.map(lambda k: " · simulated" if k == "simulated" else ""))


def config_choice(frame: pd.DataFrame) -> pd.Series:
    """The configuration filter's option per row: the readable name and the key."""
    return readable_names(frame) + " (" + frame["config_key"].astype(str) + ")"


def filter_rows(frame: pd.DataFrame, *, measurements=(), configs=(), devices=(), dtypes=(), seq_lens=(),
                dates: tuple[dt.date, dt.date] | None = None, only_ok: bool = False) -> pd.DataFrame:
    """Rows matching every non-empty filter (``configs`` are ``config_choice`` values)."""
    keep = pd.Series(True, index=frame.index)
    if measurements:
        keep &= frame["measurement"].isin(list(measurements))
    if configs:
        keep &= config_choice(frame).isin(list(configs))
    if devices:
        keep &= frame["device_name"].isin(list(devices))
    if dtypes:
        keep &= frame["dtype"].isin(list(dtypes))
    if seq_lens:
        keep &= frame["seq_len_tokens"].isin([int(n) for n in seq_lens])
    if dates is not None:
        day = measured_day(frame)
        keep &= (day >= dates[0]) & (day <= dates[1])
    if only_ok:
        keep &= frame["status"] == "ok"
    return frame[keep.fillna(False).astype(bool)]


def measured_day(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["timestamp"].astype(str), utc=True, errors="coerce", format="ISO8601").dt.date


def newest_per_point(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest ok row of each (series, measurement, phase, component, batch, seq_len)."""
    ok = frame[frame["status"] == "ok"].copy()
    ok["series"] = series_label(ok)
    ok = ok.sort_values("id", ascending=False)
    return ok.drop_duplicates(["series", "measurement", "phase", "component", "batch", "seq_len_tokens"])


def stored_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows table: each stored row with its configuration's readable name and its kind (measured, simulated,
    predicted) in front, ``config_json`` left out."""
    out = frame.drop(columns=["config_json"])
    out.insert(0, "kind", tables.row_kind(frame))
    out.insert(0, "configuration", readable_names(frame))
    return out


def series_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per series: rows, lengths, where it came from and when (newest first)."""
    data = frame.assign(series=series_label(frame), where=frame["source"].map(SOURCE_WORDS).fillna(frame["source"]),
                        kind=tables.row_kind(frame))
    out = data.groupby("series", sort=False).agg(
        config_key=("config_key", "first"),
        kind=("kind", lambda s: ", ".join(sorted(set(s)))),
        stored_names=("config_name", lambda s: ", ".join(sorted({str(n) for n in s.dropna()}))),
        measurements=("measurement", lambda s: ", ".join(sorted(set(s)))),
        rows=("id", "size"), failed=("status", lambda s: int((s != "ok").sum())),
        shortest_tokens=("seq_len_tokens", "min"), longest_tokens=("seq_len_tokens", "max"),
        measured_on=("where", lambda s: ", ".join(sorted(set(s)))),
        hosts=("host", lambda s: ", ".join(sorted({h for h in s.dropna().astype(str) if h}))),
        newest=("timestamp", "max"), newest_id=("id", "max"),
    ).reset_index()
    return out.sort_values("newest_id", ascending=False).drop(columns="newest_id")


# --- the view ----------------------------------------------------------------------------------------------

def render(ctx: Ctx) -> None:
    path, mtime = _db_state()
    frame, error = _load(path, mtime)
    if error:
        st.error(error)
        return
    st.caption(f"Every stored result: measurements from this page (here or on a Ray cluster), `xtlens profile` runs "
               f"and imported files — {len(frame):,} row(s) in `{path}`"
               + (f" (the newest {MAX_ROWS:,} shown)" if len(frame) >= MAX_ROWS else "")
               + ". This tab does not follow the sidebar's configuration and workload: filter the stored rows below.")
    _import_box(path)
    if frame.empty:
        st.info("No stored results yet. Press Measure in the FLOPs, Memory or Latency view, run `xtlens profile` "
                "(on this machine or with `--ray ADDRESS`), or add result files above.")
        return
    picked = _filters(frame)
    if picked.empty:
        st.warning("No stored row matches these filters.")
        return
    summary = series_summary(picked)
    st.markdown(f"**{len(summary)} series** (configuration · device · dtype) match — pick the ones to compare:")
    dataframe(arrow_safe(summary), "df.history.series", title="stored series", raw=summary, width="stretch",
                 height=min(35 * (len(summary) + 1) + 3, 300), column_config=SUMMARY_LABELS)
    options = summary["series"].tolist()
    chosen = st.multiselect("series to compare", options, default=options[:DEFAULT_SERIES], key="history.series",
                            help="Each series is one line in the charts below; pick series measured on different "
                                 "machines to compare them.")
    if not chosen:
        st.info("Pick at least one series to draw the charts.")
    else:
        _charts(newest_per_point(picked[series_label(picked).isin(chosen)]), chosen)
    table(stored_rows(picked), f"stored results ({len(picked)} row(s))", "history.rows",
          caption="Newest first. configuration: the readable name of the row's configuration (config_name: the name "
                  "it was stored under); kind: simulated rows are memory from MemTracker under FakeTensorMode (the "
                  "sizes of the tensors a run would allocate, no run), so their measured_bytes column holds a "
                  "simulated peak. id, stored_at, source, host and attempts say where and how each row was stored "
                  "(attempts = 2: a Ray worker died and the point was retried once).")


def _filters(frame: pd.DataFrame) -> pd.DataFrame:
    days = measured_day(frame).dropna()
    c = st.columns(3)
    measurements = c[0].multiselect("measurement", sorted(frame["measurement"].dropna().unique()),
                                    key="history.measurement")
    configs = c[1].multiselect("configuration (name and key)", sorted(config_choice(frame).unique()),
                               key="history.config")
    devices = c[2].multiselect("device", sorted(frame["device_name"].dropna().unique()), key="history.device")
    c = st.columns(3)
    dtypes = c[0].multiselect("dtype", sorted(frame["dtype"].dropna().unique()), key="history.dtype")
    seq_lens = c[1].multiselect("sequence length (tokens)", sorted(int(n) for n in frame["seq_len_tokens"].dropna().unique()),
                                key="history.seq_len")
    dates = None
    if not days.empty:
        lo, hi = min(days), max(days)
        got = c[2].date_input("measured between", value=(lo, hi), min_value=lo, max_value=hi, key="history.dates")
        if isinstance(got, (tuple, list)) and len(got) == 2:
            dates = (got[0], got[1])
    only_ok = st.toggle("hide failed rows (oom, error, timeout)", value=False, key="history.only_ok")
    return filter_rows(frame, measurements=measurements, configs=configs, devices=devices, dtypes=dtypes,
                       seq_lens=seq_lens, dates=dates, only_ok=only_ok)


def _charts(points: pd.DataFrame, chosen: list[str]) -> None:
    """Latency, memory and FLOP charts; a series has the same colour in each (its place in ``chosen``)."""
    if points.empty:
        st.info("The picked series have no successful rows to draw (see the table for why they failed).")
        return
    lat = points[points["measurement"] == "latency"]
    if not lat.empty:
        phases = [p for p in tables.LATENCY_PHASES if p in set(lat["phase"])]
        phase = st.radio("latency phase", phases, horizontal=True, key="history.latency_phase") if len(phases) > 1 \
            else phases[0]
        chart(_legend(chosen, charts.latency_loglog(lat[lat["phase"] == phase],
                                            title=f"{phase} latency by series: median with min-max bars (ms)")),
              "history_latency")
    mem = points[(points["measurement"] == "memory") & (points["component"] == "total")].copy()
    if not mem.empty:
        mem["phase"] = mem["series"] + " / " + mem["phase"].astype(str)
        mem["measured_label"] = tables.row_kind(mem)  # simulated memory is never called measured
        kinds = " or ".join(sorted(set(mem["measured_label"]), reverse=False))
        chart(_legend(chosen, charts.measured_vs_predicted(
            mem[["seq_len_tokens", "phase", "predicted_bytes", "measured_bytes", "measured_label"]],
            title=f"Peak memory by series and phase: {kinds} (markers) vs predicted (dashed)")), "history_memory")
    flops = points[(points["measurement"] == "flops") & points["torch_counter_flops"].notna()].copy()
    if not flops.empty:
        flops["line"] = flops["series"] + " / " + flops["phase"].astype(str)
        chart(_legend(chosen, charts.overlay_lines(
            flops, x="seq_len_tokens", y="torch_counter_flops", series="line",
            title="FLOPs per step, counted by torch's FlopCounterMode, by series and phase", x_title=charts.SEQ_AXIS,
            y_title=charts.FLOPS_AXIS + ", log scale", log_y=True)), "history_flops")


def _legend(chosen: list[str], fig):
    """One colour per series in every chart (by its place in ``chosen``); phases of one series differ by marker
    symbol and dash (``charts.colour_by_series``). The legend is always shown: with one line plotly hides it."""
    return charts.colour_by_series(fig, {s: charts.SERIES[i % len(charts.SERIES)] for i, s in enumerate(chosen)})


def _import_box(path: str) -> None:
    with st.expander("Add result files to the database"):
        st.caption("Tables written by `xtlens profile --out FILE` (on any machine) or downloaded from this page: "
                   ".csv, .json or .parquet. The same as `xtlens results import FILE`.")
        files = st.file_uploader("result files", type=["csv", "json", "parquet"], accept_multiple_files=True,
                                 key="history.upload")
        if files and st.button(f"Add {len(files)} file(s)", key="history.import", type="primary"):
            from xtlens.profiling.results.records import from_frame
            from xtlens.profiling.results.store import ResultStore, StoreError
            from xtlens.profiling.results.uploads import read_table_upload

            store = ResultStore(path)
            for f in files:
                try:  # the one upload boundary, as `xtlens results import`: size cap, exact counts, validated rows
                    frame = read_table_upload(f.name, f.getvalue(), f.name.rsplit(".", 1)[-1].lower())
                    added = store.import_once(from_frame(frame), f.getvalue(), name=f.name)
                except (ValueError, KeyError, StoreError) as exc:
                    st.error(f"{f.name}: {exc}")
                    continue
                if added is None:
                    st.info(f"{f.name}: already in the database (a file with the same bytes was added before)")
                else:
                    st.success(f"{f.name}: {len(added)} row(s) added")
            _load.clear()
