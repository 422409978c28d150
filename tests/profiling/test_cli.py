"""The xtlens command line: estimate values for the seed, profile tables, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from xtlens.core.config import PRESETS, ModelConfig, Workload
from xtlens.profiling.cli import DASHBOARD_APP, dashboard_command, load_config, main

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def _json(capsys, *argv: str) -> dict:
    assert main(["estimate", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_estimate_json_for_the_seed(capsys) -> None:
    out = _json(capsys, "--preset", "seed", "--seq-len", "8192")
    assert out["num_params"] == 36_629_504
    assert out["fwd_flops"] == 1_256_546_369_536
    assert out["fwd_flops_causal"] == 844_279_840_768
    assert out["train_step_flops"] == 3_769_639_108_608
    assert out["weights_bytes"] == 4 * 36_629_504
    for key in ("kv_cache_bytes", "alibi_bias_bytes", "activation_bytes_inference", "activation_bytes_training"):
        assert isinstance(out[key], int) and out[key] > 0, key
    assert out["config"] == PRESETS["seed"].to_dict()
    assert out["workload"] == {"batch": 1, "seq_len": 8192, "dtype": "float32"}
    # defaults: the seed, its max_seq_len
    assert _json(capsys)["fwd_flops"] == 1_256_546_369_536


def test_estimate_set_config_and_snippet(tmp_path, capsys) -> None:
    out = _json(capsys, "--set", "depth=12", "--set", "attn_flash=false", "--set", "ff_mult=2.5",
                "--set", "alibi_num_heads=none", "--seq-len", "1024", "--batch", "2", "--dtype", "bfloat16")
    assert out["config"]["depth"] == 12 and out["config"]["attn_flash"] is False
    assert out["config"]["ff_mult"] == 2.5 and out["config"]["alibi_num_heads"] is None
    assert out["weights_bytes"] == 2 * out["num_params"] and out["workload"]["batch"] == 2
    cfg = ModelConfig(num_tokens=256, max_seq_len=128, dim=64, depth=2, heads=4)
    (tmp_path / "c.json").write_text(cfg.to_json())
    (tmp_path / "s.py").write_text(cfg.to_snippet())
    from_json = _json(capsys, "--config", str(tmp_path / "c.json"))
    from_snippet = _json(capsys, "--snippet", str(tmp_path / "s.py"))
    assert from_json == from_snippet and from_json["config"] == cfg.to_dict()
    assert load_config(snippet=str(tmp_path / "s.py"), sets=["depth=3"]) == cfg.replace(depth=3)


def test_estimate_csv_and_table(capsys) -> None:
    assert main(["estimate", "--seq-len", "8192", "--format", "csv"]) == 0
    header, values = capsys.readouterr().out.strip().splitlines()
    row = dict(zip(header.split(","), values.split(","), strict=True))
    assert row["num_params"] == "36629504" and row["fwd_flops"] == "1256546369536"
    assert row["config.attn_flash"] == "true" and row["workload.seq_len"] == "8192"
    assert main(["estimate", "--seq-len", "8192", "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert "fwd_flops" in table and "1,256,546,369,536" in table and "1.257 TFLOPs" in table
    assert "36,629,504" in table


@pytest.mark.parametrize(("argv", "field"), [
    (["--set", "heads=abc"], "heads"),
    (["--set", "dim=3"], "dim"),
    (["--set", "attn_kv_heads=3", "--set", "attn_one_kv_head=false"], "attn_kv_heads"),
    (["--set", "widht=3"], "widht"),
    (["--seq-len", "9000"], "seq_len"),
    (["--batch", "0"], "batch"),
    (["--dtype", "int8"], "dtype"),
    (["--preset", "nope"], "preset"),
    (["--config", "/nonexistent/c.json"], "/nonexistent/c.json"),
    (["--set", "depth"], "depth"),
])
def test_bad_input_exits_2_naming_the_field(capsys, argv, field) -> None:
    assert main(["estimate", *argv]) == 2
    captured = capsys.readouterr()
    assert field in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_estimate_does_not_import_torch() -> None:
    code = ("import sys; from xtlens.profiling.cli import main; rc = main(['estimate', '--format', 'table']); "
            "bad = [m for m in ('torch', 'pandas', 'x_transformers') if m in sys.modules]; "
            "sys.stderr.write(repr(bad)); sys.exit(rc or len(bad))")
    proc = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "[]", proc.stderr


def test_bad_input_in_a_real_process_has_no_traceback() -> None:
    proc = subprocess.run([PY, "-m", "xtlens.profiling.cli", "estimate", "--set", "heads=0"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "xtlens estimate: error: heads = 0 is not allowed: an integer from 1 to 512"


def test_profile_writes_a_table_the_dashboard_can_load(tmp_path, monkeypatch, capsys) -> None:
    from xtlens.core.cost_model import flop_counts
    from xtlens.profiling.results.export import read_records

    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "seed.csv"
    assert main(["profile", "--preset", "seed", "--what", "flops", "--seq-lens", "128", "--device", "cpu",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"wrote 1 row(s) to {out}" in err and "100.0%" in err
    (row,) = read_records(out)
    expected = flop_counts(PRESETS["seed"], Workload(seq_len=128)).fwd_flops
    assert (row.config_name, row.measurement, row.phase, row.status) == ("seed", "flops", "forward", "ok")
    assert row.predicted_flops == expected == row.torch_counter_flops == 6_949_961_728
    assert row.fvcore_flops > expected and row.flops_rel_err < 0.01
    assert row.config == PRESETS["seed"] and row.device == "cpu"
    # Markdown on stdout without --out (the cache answers this time)
    assert main(["profile", "--what", "flops", "--seq-lens", "128", "--device", "cpu"]) == 0
    md = capsys.readouterr().out
    assert "predicted (FLOPs)" in md and "6,949,961,728" in md


def test_profile_bad_input(capsys) -> None:
    assert main(["profile", "--what", "speed"]) == 2
    assert "what = 'speed'" in capsys.readouterr().err
    assert main(["profile", "--what", "flops", "--seq-lens", "128,x"]) == 2
    assert "seq_lens" in capsys.readouterr().err
    assert main(["profile", "--what", "flops", "--out", "table.xlsx"]) == 2
    assert "not supported" in capsys.readouterr().err


def test_dashboard_command() -> None:
    assert dashboard_command(port=8600, headless=True) == [
        sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"), "--browser.gatherUsageStats", "false",
        "--server.port", "8600", "--server.headless", "true"]
    assert DASHBOARD_APP == REPO / "dashboard" / "app.py"


def test_profile_with_a_time_limit_runs_in_a_child(tmp_path, monkeypatch, capsys) -> None:
    from xtlens.profiling.results.export import read_table

    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "cache"))
    cfg = ModelConfig(num_tokens=64, max_seq_len=64, dim=32, depth=1, heads=2, attn_dim_head=16)
    (tmp_path / "tiny.json").write_text(cfg.to_json())
    out = tmp_path / "tiny.parquet"
    assert main(["profile", "--config", str(tmp_path / "tiny.json"), "--name", "tiny", "--what", "flops",
                 "--seq-lens", "16,128", "--device", "cpu", "--time-limit", "120", "--out", str(out)]) == 0
    frame = read_table(out)
    assert list(frame["status"]) == ["ok", "error"] and list(frame["config_name"]) == ["tiny", "tiny"]
    assert "max_seq_len = 64" in frame.loc[1, "error"]
    assert "(1 not ok)" in capsys.readouterr().err


def test_estimate_rows_are_the_predictions(capsys) -> None:
    from xtlens.core.cost_model import estimate

    assert main(["estimate", "--seq-len", "8192", "--format", "rows"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "quantity,phase,component,unit,variant,value"
    parsed = {q: (phase, component, unit, variant, value)
              for q, phase, component, unit, variant, value in (line.split(",") for line in lines[1:])}
    est = estimate(PRESETS["seed"], Workload(seq_len=8192))
    assert set(parsed) == set(est)
    assert parsed["fwd_flops"] == ("forward", "total", "flops", "full_square", "1256546369536")
    assert parsed["training_total_bytes"][:3] == ("train_step", "total", "bytes")


def test_every_layer_error_exits_2_with_its_message(capsys) -> None:
    from xtlens.core.builder import BuildError
    from xtlens.core.config import ConfigError, XtlensError
    from xtlens.profiling.errors import ProfileError

    assert all(issubclass(t, XtlensError) for t in (ConfigError, BuildError, ProfileError))
    assert main(["profile", "--what", "flops", "--seq-lens", "32", "--device", "tpu", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "Unknown device 'tpu'" in err and "Traceback" not in err


TINY_SETS = ["--set", "num_tokens=97", "--set", "max_seq_len=64", "--set", "dim=32", "--set", "depth=2",
             "--set", "attn_dim_head=16"]


def test_profile_breakdown_and_whatif_write_tidy_rows(tmp_path, monkeypatch, capsys) -> None:
    from xtlens.profiling.results.export import read_records

    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "latency.csv"
    assert main(["profile", "--preset", "seed", *TINY_SETS, "--what", "breakdown,whatif", "--attention", "flex",
                 "--phases", "forward", "--seq-lens", "16", "--device", "cpu", "--repeats", "1", "--warmup", "0",
                 "--out", str(out)]) == 0
    rows = read_records(out)
    parts = {r.component: r for r in rows if r.measurement == "breakdown"}
    assert {"total", "alibi_bias", "attention", "remainder"} <= set(parts)
    assert all(r.phase == "forward" and r.latency_median_ms is not None for r in parts.values())
    whatif = {r.component: r for r in rows if r.measurement == "whatif"}
    assert set(whatif) == {"asbuilt", "flex"} and whatif["flex"].logits_rel_err < 1e-5
    assert whatif["flex"].speedup_vs_asbuilt > 0
    per_layer = tmp_path / "layers.csv"
    assert main(["profile", "--preset", "seed", *TINY_SETS, "--what", "breakdown", "--per-layer", "--phases", "forward",
                 "--seq-lens", "16", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--out", str(per_layer)]) == 0
    components = {r.component for r in read_records(per_layer)}
    assert {"qkv_proj@0", "qkv_proj@2", "feedforward@1"} <= components and "qkv_proj" not in components
    assert main(["profile", "--what", "whatif", "--attention", "flash9"]) == 2
    assert "attention = 'flash9'" in capsys.readouterr().err


def test_estimate_hardware(capsys, tmp_path, monkeypatch) -> None:
    from xtlens.core.config import PRESETS as P
    from xtlens.core.hardware import hardware_preset
    from xtlens.core.latency_model import UNCALIBRATED_LABEL, phase_ms
    from xtlens.core.roofline import predict

    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "results.sqlite"))  # no stored calibration
    assert main(["estimate", "--hardware", "list"]) == 0
    listing = capsys.readouterr().out
    assert "H200 SXM" in listing and "4.800" in listing and "cpu" in listing
    out = _json(capsys, "--seq-len", "8192", "--dtype", "bfloat16", "--hardware", "h200")
    h200, wl = hardware_preset("H200 SXM"), Workload(seq_len=8192, dtype="bfloat16")
    assert out["hardware"].startswith("H200 SXM") and UNCALIBRATED_LABEL in out["hardware"]
    assert out["predicted_forward_ms"] == pytest.approx(phase_ms(P["seed"], wl, h200, phase="forward"))
    assert out["predicted_train_step_ms"] == pytest.approx(phase_ms(P["seed"], wl, h200, phase="train_step"))
    # the seed (ALiBi + rotary) decodes without a cache: a whole forward per token
    assert out["predicted_decode_ms_per_token"] == pytest.approx(phase_ms(P["seed"], wl, h200, phase="decode_uncached"))
    assert main(["estimate", "--seq-len", "1024", "--hardware", "a100", "--format", "rows"]) == 0
    lines = [line.split(",") for line in capsys.readouterr().out.splitlines() if ",ms," in line]
    roofline = predict(P["seed"], Workload(seq_len=1024), hardware_preset("a100"))
    rows = {q: float(v) for q, p, c, unit, variant, v in lines}
    assert rows["roofline_forward_ms"] == pytest.approx(roofline["predicted_forward_ms"])
    assert rows["predicted_forward_ms"] > rows["roofline_forward_ms"]  # the roofline is the lower bound
    assert all(UNCALIBRATED_LABEL in variant for q, p, c, unit, variant, v in lines if c != "roofline")
    by = {(p, c): float(v) for q, p, c, unit, variant, v in lines}
    parts = sum(v for (p, c), v in by.items() if p == "forward" and c not in ("total", "roofline"))
    assert parts == pytest.approx(by[("forward", "total")])
    assert main(["estimate", "--hardware", "tpu-v9"]) == 2
    assert "hardware = 'tpu-v9'" in capsys.readouterr().err
    assert main(["estimate", "--hardware", "t4", "--dtype", "bfloat16"]) == 2
    assert "dtype" in capsys.readouterr().err


def test_estimate_hardware_uses_the_stored_calibration(capsys, tmp_path, monkeypatch) -> None:
    """``--hardware cpu`` (or the device's name) with a stored calibration: the calibrated predictor on it, and
    the output names the calibration's key."""
    from xtlens.core.config import PRESETS as P
    from xtlens.core.latency_model import phase_ms
    from xtlens.profiling.results.calibrations import save_calibration

    from tests.core.test_latency_model import fake_calibration

    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "results.sqlite"))
    cal = fake_calibration()
    save_calibration(cal)
    for name in ("cpu", "fake"):
        out = _json(capsys, "--seq-len", "256", "--hardware", name)
        assert cal.key in out["hardware"] and "calibrated on" in out["hardware"]
        wl = Workload(seq_len=256)
        assert out["predicted_forward_ms"] == pytest.approx(phase_ms(P["seed"], wl, cal, phase="forward"))
        assert out["predicted_train_step_ms"] == pytest.approx(phase_ms(P["seed"], wl, cal, phase="train_step"))


def test_estimate_setup_options_report_per_device_peaks_and_what_fits(capsys) -> None:
    from xtlens.core import cost_model
    from xtlens.core.setup import ServingSetup, TrainingSetup

    out = _json(capsys, "--seq-len", "2048", "--precision", "amp_bf16", "--recompute", "block", "--dp", "4",
                "--zero", "3", "--grad-accum", "2", "--weights-bits", "4", "--group-size", "64", "--kv-bits", "int8",
                "--device-memory-gib", "24")
    training = TrainingSetup(precision="amp_bf16", recompute="block", dp=4, zero=3, grad_accum=2)
    serving = ServingSetup(weights_bits=4, group_size=64, kv_cache="int8")
    wl = Workload(seq_len=2048)
    assert out["training_setup"] == training.to_dict() and out["serving_setup"] == serving.to_dict()
    assert out["training_total_bytes"] == cost_model.training_memory(PRESETS["seed"], wl, training).peak_bytes
    assert out["inference_total_bytes"] == cost_model.serving_memory(PRESETS["seed"], wl, serving).total_bytes
    fits = cost_model.what_fits(PRESETS["seed"], wl, 24 * 2**30, training=training, serving=serving)
    assert {k: out[k] for k in fits} == fits and out["device_memory_bytes"] == 24 * 2**30
    # without setup options: today's single-device numbers, no setup keys
    plain = _json(capsys, "--seq-len", "2048")
    assert "training_setup" not in plain
    assert plain["training_total_bytes"] == cost_model.memory_estimate(PRESETS["seed"], wl).training_total_bytes


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--zero", "3"], "zero = 3 is not allowed"),
    (["--tp", "3"], "tp = 3 is not allowed"),
    (["--weights-bits", "4", "--group-size", "96"], "group_size = 96 is not allowed"),
    (["--device-memory-gib", "lots"], "--device-memory-gib"),
])
def test_estimate_bad_setup_exits_2_naming_the_field(capsys, argv, fragment) -> None:
    assert main(["estimate", *argv]) == 2
    assert fragment in capsys.readouterr().err
