"""The Setups tab's What-fits answer (AppTest): the one-line answer for the chosen device is ``core.fits.fit_answer``'s
(a GPU preset: the CUDA process; a number of GiB of CPU memory: the ordered peak), with the first remedy when it does
not fit and the remedies tried as an exported table."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest
from xtlens.core import units
from xtlens.core.config import PRESETS, Workload
from xtlens.core.fits import FitDevice, fit_answer, what_fits
from xtlens.core.setup import GPU_PRESETS_GIB, TrainingSetup
from xtlens.dashboard.views.setups import CUSTOM_CPU

from tests.dashboard.views.test_setups_view import _app  # the Setups tab opened with a query

SEED = PRESETS["seed"]


def _answer_lines(at: AppTest) -> list[str]:
    return [e.value for e in [*at.success, *at.warning] if "What fits" in e.value]


def test_what_fits_answers_for_the_gpu_then_for_cpu_memory() -> None:
    at = _app({"seq_len": "2048", "batch": "4"})
    assert not at.exception, [e.value for e in at.exception]
    wl = Workload(batch=4, seq_len=2048)
    gpu = next(iter(GPU_PRESETS_GIB))
    device = FitDevice(memory_bytes=int(GPU_PRESETS_GIB[gpu] * units.GIB), kind="cuda", gpu=gpu)
    expected = fit_answer(SEED, wl, TrainingSetup(), device)
    lines = _answer_lines(at)
    assert len(lines) == 1 and expected.text[1:] in lines[0] and gpu in lines[0], lines
    assert expected.fits and lines[0] in [e.value for e in at.success]
    assert any(f"Needs {units.fmt_bytes(expected.need_bytes)}" in c.value and "CUDA context" in c.value
               for c in at.caption), [c.value for c in at.caption]
    fits = what_fits(SEED, wl, device, training=TrainingSetup())
    assert any(f"batch up to **{fits['fits_train_batch']:,}**" in m.value for m in at.markdown)
    # 4 GiB of CPU memory: the fp32 step does not fit; the answer names the first remedy that does
    at.selectbox(key="setups.gpu").set_value(CUSTOM_CPU).run()
    at.number_input(key="setups.gib").set_value(4.0).run()
    assert not at.exception, [e.value for e in at.exception]
    cpu = fit_answer(SEED, wl, TrainingSetup(), FitDevice(memory_bytes=4 * units.GIB, kind="cpu"))
    assert not cpu.fits and cpu.remedy is not None and cpu.text.startswith("needs ")
    lines = _answer_lines(at)
    assert len(lines) == 1 and lines[0] in [e.value for e in at.warning] and "N" + cpu.text[1:] in lines[0], lines
    assert any("ordered peak" in c.value for c in at.caption)
    names = [r.name for r in cpu.tried]
    tables = [d.value for d in at.dataframe if "remedy" in d.value.columns]
    assert len(tables) == 1 and tables[0]["remedy"].tolist() == names
