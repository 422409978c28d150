"""Issue 22: a hostile or damaged session file or link never breaks a view for the rest of the session.

A lone surrogate in a pin or table name and a NaN in a saved setting are refused when the session file is read
(naming the field); a NaN that reaches the restore or the URL (``?data_bt=nan``) is not used and named in a note;
Compare and Export render afterwards without an exception."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest
from xtlens.core.config import PRESETS, Workload
from xtlens.dashboard import tables
from xtlens.dashboard.session import restore, session_io, setting_values, store
from xtlens.dashboard.views import latency
from xtlens.profiling.results.export import as_frame
from xtlens.profiling.results.records import ProfileRecord, base_fields

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
SEED = PRESETS["seed"]


def _row(**changes) -> ProfileRecord:
    fields = base_fields(SEED, Workload(batch=2, seq_len=512), config_name="seed", measurement="latency",
                         phase="forward", device="cpu", device_name="CPU")
    fields.update(latency_median_ms=3.0, timestamp="t")
    fields.update(changes)
    return ProfileRecord(**fields)


def _session(**settings) -> dict:
    snap = session_io.make(SEED, Workload(), "cpu", [("wide", SEED)], [("mine", as_frame([_row()]))],
                           settings={"tradeoffs.dataset_btokens": 5.0, **settings})
    return json.loads(session_io.to_json(snap))


def _views_render(at: AppTest, views=("Compare", "Export", "Trade-offs")) -> None:
    for view in views:
        at.session_state["view"] = view
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert not [e.value for e in at.error if "could not be drawn" in e.value], view


@pytest.mark.parametrize(("where", "field"), [("pin", "pin 1's name"), ("table", "result table 1's name")])
def test_a_lone_surrogate_in_a_name_is_refused_naming_the_field(where, field) -> None:
    doc = _session()
    (doc["pins"] if where == "pin" else doc["results"])[0]["name"] = "x\ud800"
    with pytest.raises(ValueError, match=f"{field}.*lone surrogate"):
        session_io.from_json(json.dumps(doc))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, "many", True])
def test_a_setting_it_cannot_hold_is_refused_naming_the_setting(bad) -> None:
    doc = _session()
    doc["settings"]["tradeoffs.dataset_btokens"] = bad
    with pytest.raises(ValueError, match="setting tradeoffs.dataset_btokens .*finite number from 0.001 to 100000"):
        session_io.from_json(json.dumps(doc))  # json.dumps writes NaN: Python's reader takes it


def test_an_unknown_setting_is_not_restored_into_the_page_state() -> None:
    doc = _session()
    doc["settings"]["_xtlens_uploads"] = "not a list of tables"  # would break Export if it reached the state
    assert dict(session_io.from_json(json.dumps(doc)).settings) == {"tradeoffs.dataset_btokens": 5.0}


def test_the_setting_rules_know_every_choice_the_views_offer() -> None:
    for axis in tables.SWEEP_AXES:
        assert setting_values.check_setting("tradeoffs.axis", axis) == axis
    assert setting_values.check_setting("latency.phases", list(latency.PHASES)) == list(latency.PHASES)
    with pytest.raises(ValueError, match="tradeoffs.axis"):
        setting_values.check_setting("tradeoffs.axis", "ff_mult")


def test_a_refused_session_leaves_compare_and_export_working() -> None:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    doc = _session()
    doc["pins"][0]["name"] = "\ud800"
    with pytest.raises(ValueError):
        session_io.from_json(json.dumps(doc))
    doc["pins"][0]["name"] = "wide"
    with store.use(at.session_state):
        restore.on_restore_session(session_io.from_json(json.dumps(doc)))
    _views_render(at)


def test_a_nan_setting_that_reaches_the_restore_is_named_and_export_still_works() -> None:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    snap = session_io.make(SEED, Workload(), "cpu", [], [("mine", as_frame([_row()]))],
                           settings={"tradeoffs.dataset_btokens": math.nan, "latency.repeats": 10**30})
    with store.use(at.session_state):
        restore.on_restore_session(snap)  # a snapshot made in code skips from_json: restore checks again
    at.session_state["view"] = "Export"
    at.run()
    shown = " ".join(x.value for x in [*at.success, *at.info, *at.caption, *at.warning, *at.markdown])
    assert "tradeoffs.dataset_btokens" in shown and "latency.repeats" in shown, shown
    _views_render(at)
    with store.use(at.session_state):
        from xtlens.dashboard.session import tab_settings

        kept = tab_settings.kept_settings()
    assert kept.get("tradeoffs.dataset_btokens", 1.0) == 1.0 and kept.get("latency.repeats", 3) == 3


@pytest.mark.parametrize("query", [{"data_bt": "nan"}, {"data_bt": "inf"}, {"data_bt": "-1"}, {"lat_rep": "1e400"},
                                   {"lat_max": "0"}, {"axis": "nonsense"}])
def test_a_hostile_url_setting_is_named_and_every_view_keeps_working(query) -> None:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update(query)
    at.run()
    (short,) = query
    notes = " ".join(x.value for x in [*at.warning, *at.info, *at.caption, *at.markdown])
    assert "The link's value was not used" in notes and short in notes, notes
    _views_render(at)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*setting_values.SETTINGS, "view", "x"]),
                       st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.text(max_size=8), st.booleans(),
                                 st.lists(st.text(max_size=8), max_size=3)), max_size=4),
       st.sampled_from(["wide", "\ud800", "", "a" * 300, "a" * 1001, "\x00"]))
def test_any_session_file_is_refused_or_restores_into_one_that_exports(saved, pin_name) -> None:
    doc = _session()
    doc["settings"] = saved
    doc["pins"][0]["name"] = pin_name
    try:
        snap = session_io.from_json(json.dumps(doc))
    except ValueError as exc:
        assert "session" in str(exc)
        return
    assert set(dict(snap.settings)) <= set(setting_values.SETTINGS)
    json.loads(session_io.to_json(snap), parse_constant=lambda name: pytest.fail(f"non-standard JSON {name}"))


def test_names_the_page_can_write_restore() -> None:
    doc = _session()
    doc["pins"][0]["name"] = "é" * 200  # the pin-name box takes 200 characters
    doc["results"][0]["name"] = "r" * 250 + ".parquet"  # a long file name
    snap = session_io.from_json(json.dumps(doc))
    assert snap.pins[0].name == "é" * 200 and snap.results[0][0].startswith("r" * 250)
