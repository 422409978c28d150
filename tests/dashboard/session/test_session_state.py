"""The session's concern modules on a plain dict (``store.use``): pins, tab settings, uploads, a restored
session file. The page-level behaviour (URL, widgets) is driven by AppTest in ``tests/dashboard/test_app.py``."""

from __future__ import annotations

import pandas as pd
import pytest
from xtlens.core.config import PRESETS, Workload
from xtlens.dashboard import schema
from xtlens.dashboard.session import pins, restore, session_io, store, tab_settings, uploads, widgets

SEED, MHA = PRESETS["seed"], PRESETS["seed-mha"]


@pytest.fixture()
def session() -> dict:
    values: dict = {}
    with store.use(values):
        yield values


def test_pins_get_unique_names_and_stop_at_the_limit(session) -> None:
    for _ in range(pins.MAX_PINS + 2):
        pins.on_add_pin("mine", SEED)
    assert [p.name for p in pins.pinned()] == ["mine", "mine (2)", "mine (3)", "mine (4)"][: pins.MAX_PINS]
    assert all(p.config == SEED for p in pins.pinned())
    pins.on_remove_pin(1)
    pins.on_remove_pin(99)  # out of range: nothing happens
    assert [p.name for p in pins.pinned()] == ["mine", "mine (3)", "mine (4)"]
    session["compare.pin_name"] = "typed"
    pins.on_pin_current("compare.pin_name", MHA)
    assert (pins.pinned()[-1].name, pins.pinned()[-1].config) == ("typed", MHA)


def test_a_tab_setting_survives_the_widget_being_dropped_and_an_invalid_one_falls_back(session) -> None:
    # the value comes back as the widget's default (issue 21: a widget the browser re-creates starts from it)
    assert tab_settings.tab_setting("latency.max_len", 2048) == 2048
    session["latency.max_len"] = 4096  # the user moved the widget
    assert tab_settings.tab_setting("latency.max_len", 2048) == 4096
    del session["latency.max_len"]  # another tab was drawn: Streamlit dropped the widget's value
    assert tab_settings.tab_setting("latency.max_len", 2048) == 4096
    session["latency.max_len"] = 4096  # the widget holds a value this configuration does not allow
    assert tab_settings.tab_setting("latency.max_len", 2048, lambda v: v <= 1024) == 2048
    assert session["latency.max_len"] == 2048  # and the browser is told (a one-shot "set value")
    session["tradeoffs.dataset_btokens"] = 0.5
    tab_settings.tab_setting("tradeoffs.dataset_btokens", 1.0)
    assert tab_settings.tab_url_params() == {"lat_max": "2048", "data_bt": "0.5"}


def test_a_table_of_the_same_name_replaces_the_older_one_and_keeps_its_origin(session) -> None:
    uploads.add_upload("a.csv", pd.DataFrame({"x": [1]}))
    uploads.add_upload("b.csv", pd.DataFrame({"x": [2]}), origin="restored session")
    uploads.add_upload("a.csv", pd.DataFrame({"x": [3]}))
    assert [(name, int(frame["x"].iloc[0])) for name, frame in uploads.uploads()] == [("b.csv", 2), ("a.csv", 3)]
    assert (uploads.upload_origin("a.csv"), uploads.upload_origin("b.csv")) == ("uploaded a.csv", "restored session")
    assert uploads.new_upload("id-1") and not uploads.new_upload("id-1")
    uploads.forget_upload_id("id-1")
    assert uploads.new_upload("id-1")
    uploads.on_clear_uploads()
    assert uploads.uploads() == []


def test_restoring_a_session_file_fills_widgets_pins_tables_and_settings(session) -> None:
    widgets.set_devices(["cpu", "cuda:0"], "cpu")
    table = pd.DataFrame({"x": [1.0]})
    snap = session_io.Snapshot(config=MHA, workload=Workload(seq_len=16384, batch=3, dtype="float16"),
                               device="cuda:0", pins=(session_io.PinnedConfig(name="p", config=SEED),),
                               results=(("t.csv", table),), settings=(("tradeoffs.axis", "heads"),))
    restore.on_restore_session(snap)
    assert widgets.read_config() == (MHA, None)
    assert session[widgets.wl_key("seq_len")] == schema.MAX_SEQ_LEN_UI  # the page's longest, not 16384
    assert (session[widgets.wl_key("batch")], session[widgets.wl_key("dtype")]) == (3, "float16")
    assert widgets.read_device() == "cuda:0"
    assert [(p.name, p.config) for p in pins.pinned()] == [("p", SEED)]
    assert uploads.upload_origin("t.csv") == "restored session"
    assert tab_settings.kept_settings() == {"tradeoffs.axis": "heads"}
    restore.on_restore_session(session_io.Snapshot(config=SEED, workload=Workload(), device="tpu"))
    assert widgets.read_device() == "cuda:0"  # a device this machine lacks is not chosen
