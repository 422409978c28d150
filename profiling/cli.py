"""The ``xtlens`` command line: ``estimate`` (closed form, instant), ``profile`` (measure), ``probe`` (train:
benefits, see ``profiling/benefit/cli.py``), ``results`` (the SQLite result store), ``calibrate`` (this device's
latency terms, stored), ``dashboard``.

    xtlens estimate --preset seed --seq-len 8192 --format json
    xtlens estimate --snippet model.py --set depth=12 --set attn_flash=false --format table
    xtlens profile --preset seed --what flops,memory --seq-lens 512,1024,2048 --out seed.parquet
    xtlens profile --preset seed --what latency --device cuda --ray auto
    xtlens results list
    xtlens results export --device H100 h100.parquet
    xtlens profile --preset seed --what breakdown,whatif --attention flex,compile --seq-lens 1024
    xtlens estimate --preset seed --seq-len 8192 --dtype bfloat16 --hardware h200
    xtlens calibrate --device cpu --time-budget 60 --out cpu-calibration.json
    xtlens dashboard --port 8501 --headless

Configuration: ``--preset NAME`` (default ``seed``), ``--config FILE.json`` (a JSON object of
``ModelConfig`` fields) or ``--snippet FILE.py`` (a pasted ``TransformerWrapper(...)`` call, parsed
with ``ast``, never run); then each ``--set key=value`` overrides one field, typed by the field's type
(``true``/``false``, ``none``, integers, numbers), exactly as the dashboard's URL query is decoded.

Invalid input exits with status 2 and the validation message (naming the field) on stderr.
``estimate`` imports neither torch nor pandas: it answers in milliseconds (``--hardware cpu`` imports torch
to calibrate this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from xtlens.core.config import (
    ConfigError,
    ModelConfig,
    Workload,
    XtlensError,
)
from xtlens.core.presets import config_label
from xtlens.core.units import fmt_value, unit_of
from xtlens.profiling.cli_common import (
    ProgressBar,
    add_config_options,
    bounded_int,
    config_from_args,
    follow,
    load_config,
    print_error,
    run_on_ray,
    time_limit_s,
)

__all__ = ["main", "build_parser", "load_config"]

DEFAULT_TIME_LIMIT_S = 600.0  # profiling.run.worker.DEFAULT_TIME_LIMIT_S (not imported: the CLI starts without torch)

# xtlens.profiling and xtlens.dashboard are sibling packages (repository folders profiling/ and dashboard/)
DASHBOARD_APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(name, text, "comma-separated integers, e.g. 512,1024,2048") from None
    if not values:
        raise ConfigError(name, text, "at least one integer")
    return values


# --- estimate -----------------------------------------------------------------------------------------

def _estimate(args: argparse.Namespace) -> int:
    from xtlens.core.cost_model import predictions

    cfg = config_from_args(args)
    wl = Workload(batch=args.batch, seq_len=args.seq_len if args.seq_len is not None else cfg.max_seq_len,
                  dtype=args.dtype).check_against(cfg)
    if args.hardware is not None and args.hardware.strip().lower() == "list":
        print(_hardware_list())
        return 0
    training, serving = _setups_from(args, cfg)
    rows = predictions(cfg, wl, training=training, serving=serving)
    values = {r.quantity: r.value for r in rows}  # = core.cost_model.estimate(cfg, wl, training=, serving=)
    setups = {}
    if training is not None:
        setups["training_setup"] = training.to_dict()
        setups["serving_setup"] = serving.to_dict()
    if args.device_memory_gib is not None:
        from xtlens.core.cost_model import what_fits

        budget = _budget_bytes(args.device_memory_gib)
        values["device_memory_bytes"] = budget
        values.update(what_fits(cfg, wl, budget, training=training, serving=serving))
    latency_rows: list[tuple[str, str, str, str, float]] = []
    if args.hardware is not None:
        hw, latency_rows = _latency_predictions(cfg, wl, args.hardware)
        values.update({q: v for q, _phase, component, _variant, v in latency_rows if component == "total"})
        values["hardware"] = hw.name
    if args.format == "rows":
        print("quantity,phase,component,unit,variant,value")
        for r in rows:
            print(f"{r.quantity},{r.phase},{r.component},{r.unit},{r.variant},{_csv_scalar(r.value)}")
        for quantity, phase, component, variant, value in latency_rows:
            print(f"{quantity},{phase},{component},ms,{variant},{_csv_scalar(value)}")
    elif args.format == "json":
        out = {"config": cfg.to_dict(), "workload": wl.to_dict(), **setups, **values}
        print(json.dumps(out, indent=1))
    elif args.format == "csv":
        row = {**{f"config.{k}": v for k, v in cfg.to_dict().items()}, **{f"workload.{k}": v for k, v in wl.to_dict().items()},
               **{f"{name.split('_')[0]}.{k}": v for name, d in setups.items() for k, v in d.items()}, **values}
        print(",".join(row))
        print(",".join(_csv_scalar(v) for v in row.values()))
    else:
        print(_estimate_table(cfg, wl, values))
    return 0


def _hardware_list() -> str:
    from xtlens.core.hardware import GPU_PRESETS

    lines = ["name        bf16 TFLOP/s  fp32 TFLOP/s  bandwidth TB/s  (dense peaks, datasheets; 'cpu' calibrates this "
             "machine)"]
    for name, hw in GPU_PRESETS.items():
        bf16 = hw.peak("bfloat16")
        lines.append(f"{name:<10}  {'-' if bf16 is None else f'{bf16 / 1e12:,.1f}':>12}  "
                     f"{hw.peak('float32') / 1e12:>12,.1f}  {hw.mem_bandwidth_bytes_per_s / 1e12:>14.3f}")
    lines.append("cpu         (measured: profiling.measure.calibrate on 1024- and 2048-square products per dtype and a "
                 "64 MiB element-wise add, a second or two per dtype; a dtype this CPU emulates is found on a 256-square "
                 "product and stays small)")
    return "\n".join(lines)


def _latency_predictions(cfg: ModelConfig, wl: Workload, name: str):
    """``(source, rows)``: latency predictions as ``(quantity, phase, component, variant, ms)``.

    With a stored calibration for ``name`` (``xtlens calibrate``; ``cpu`` / ``cuda``: the newest of that kind, else
    matched by device name) the calibrated predictor ``core.latency_model`` on it, variant ``calibrated on <key>``;
    otherwise the GPU preset ``name`` (or, for ``cpu``, the quick ceilings of ``calibrate_cpu``) with roofline +
    typical overheads, variant ``uncalibrated: ...`` with its error band. Rows: the three headline totals
    (forward, training step, decode per token: cached unless ALiBi + rotary), each part of the forward and the
    training step (``predicted_<phase>_<part>_ms``) and, for reference, the roofline lower bound of each phase
    (``roofline_<phase>_ms``). ``source.name`` says what was used."""
    from types import SimpleNamespace

    from xtlens.core.hardware import hardware_preset
    from xtlens.core.latency_model import phase_ms, predict_latency, prediction_label
    from xtlens.core.roofline import predict
    from xtlens.profiling.results.calibrations import latest_calibration

    source = latest_calibration(name.strip())
    hw = None
    if source is None:
        if name.strip().lower() == "cpu":
            from xtlens.profiling.measure.roofline import (
                calibrate_cpu,  # imports torch: the quick ceilings are measured here
            )

            hw = calibrate_cpu()
        else:
            hw = hardware_preset(name)
            if hw is None:
                from xtlens.core.hardware import GPU_PRESETS

                raise ConfigError("--hardware", name, f"'list', 'cpu' or one of {', '.join(GPU_PRESETS)}")
        if hw.peak(wl.dtype) is None:
            raise ConfigError("--dtype", wl.dtype, f"a precision {hw.name} has units for: {', '.join(hw.peak_flops_per_s)}")
        source = hw
    variant = prediction_label(source)
    cached = not (cfg.alibi_pos_bias and cfg.uses_rotary)
    decode_phase = "decode_cached" if cached else "decode_uncached"
    rows = [("predicted_forward_ms", "forward", "total", variant, phase_ms(cfg, wl, source, phase="forward")),
            ("predicted_train_step_ms", "train_step", "total", variant, phase_ms(cfg, wl, source, phase="train_step")),
            ("predicted_decode_ms_per_token", "decode", "total", variant, phase_ms(cfg, wl, source, phase=decode_phase))]
    for phase in ("forward", "train_step"):
        for p in predict_latency(cfg, wl, source, phase=phase):
            rows.append((f"predicted_{phase}_{p.component}_ms", phase, p.component, variant, p.total_ms))
    if hw is not None:
        for q, v in predict(cfg, wl, hw).items():
            phase = q.removeprefix("predicted_").removesuffix("_ms").removesuffix("_ms_per_token")
            rows.append((f"roofline_{phase}_ms", phase, "roofline", f"roofline {hw.name} (lower bound)", v))
    label = source.name if hw is not None else source.device_name
    return SimpleNamespace(name=f"{label} ({variant})"), rows


_TRAINING_OPTIONS = {"precision": "precision", "optimizer": "optimizer", "recompute": "recompute",
                     "grad_accum": "grad_accum", "dp": "dp", "zero": "zero", "tp": "tp", "loop": "loop"}
_SERVING_OPTIONS = {"weights_bits": "weights_bits", "group_size": "group_size", "kv_bits": "kv_cache",
                    "concurrent": "concurrent", "context_len": "context_len"}


def _setups_from(args: argparse.Namespace, cfg: ModelConfig):
    """The training and serving setups named by the estimate options: both None when no setup option (nor
    ``--device-memory-gib``) is given (then the rows are the single-dtype, single-device numbers), else both
    built (defaults for the options not given) and checked against ``cfg``. Raises ``ConfigError``."""
    from xtlens.core.setup import ServingSetup, TrainingSetup

    train = {field: getattr(args, opt) for opt, field in _TRAINING_OPTIONS.items() if getattr(args, opt) is not None}
    serve = {field: getattr(args, opt) for opt, field in _SERVING_OPTIONS.items() if getattr(args, opt) is not None}
    if not train and not serve and args.device_memory_gib is None:
        return None, None
    if "weights_bits" in serve:
        serve["weights_bits"] = None if serve["weights_bits"] == "auto" else int(serve["weights_bits"])
    if serve.get("kv_cache") == "auto":
        serve["kv_cache"] = None
    return TrainingSetup(**train).check_against(cfg), ServingSetup(**serve).check_against(cfg)


def _budget_bytes(text: str) -> int:
    """``--device-memory-gib``: a number of GiB or a GPU preset name (``core.setup.GPU_PRESETS_GIB``)."""
    from xtlens.core.setup import GPU_PRESETS_GIB

    presets = {k.lower().replace(" ", ""): v for k, v in GPU_PRESETS_GIB.items()}
    key = text.lower().replace(" ", "")
    if key in presets:
        return int(presets[key] * 2**30)
    try:
        gib = float(text)
    except ValueError:
        gib = -1.0
    if not 0 < gib <= 1_000_000:
        raise ConfigError("--device-memory-gib", text, "a positive number of GiB (2**30 bytes) or one of "
                          + ", ".join(GPU_PRESETS_GIB))
    return int(gib * 2**30)


def _csv_scalar(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _estimate_table(cfg: ModelConfig, wl: Workload, values: dict[str, int | float]) -> str:
    lines = [f"workload: batch {wl.batch} x {wl.seq_len} tokens, {wl.dtype}",
             "config: " + ", ".join(f"{k}={v!r}" for k, v in {**cfg.wrapper_kwargs(), **cfg.decoder_kwargs()}.items()), ""]
    width = max(len(k) for k in values)
    for key, value in values.items():
        if isinstance(value, str):
            lines.append(f"{key:<{width}}  {value:>22}")
            continue
        number = f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"
        lines.append(f"{key:<{width}}  {number:>22}  {'' if unit_of(key) == 'count' else fmt_value(unit_of(key), value)}".rstrip())
    return "\n".join(lines)


# --- profile ------------------------------------------------------------------------------------------

def _profile(args: argparse.Namespace) -> int:
    from xtlens.profiling.results.export import format_for, to_markdown, write_table
    from xtlens.profiling.run.plan import DEFAULT_SEQ_LENS, SweepOptions, check_whats, workload_grid
    from xtlens.profiling.run.sweep import run_sweep

    cfg = config_from_args(args)
    whats = check_whats(args.what)
    if args.out is not None:
        try:
            format_for(args.out)
        except ValueError as exc:
            raise ConfigError("--out", args.out, str(exc)) from None
    seq_lens = _int_list(args.seq_lens, "seq_lens") if args.seq_lens else list(DEFAULT_SEQ_LENS)
    workloads = workload_grid(seq_lens, _int_list(args.batch, "batch"), dtype=args.dtype)
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip()) if args.phases else None
    attention = None
    if args.attention:
        from xtlens.profiling.measure.whatif import check_implementations

        attention = check_implementations(args.attention)
    options = SweepOptions(device=args.device, warmup=args.warmup, repeats=args.repeats, phases=phases,
                           sdpa_backend=args.sdpa_backend, attention=attention, per_layer=args.per_layer,
                           use_cache=not args.no_cache)
    from xtlens.profiling.results.store import open_store

    # every measured row is stored: a corrupt, foreign or unwritable database stops here (StoreError), untouched,
    # before anything is measured; rows an earlier run had to spool are stored now
    store = open_store()
    if store.spool_stored:
        print(f"stored {store.spool_stored} row(s) an earlier run had kept in the spool into {store.path}",
              file=sys.stderr)
    store_failures: list[str] = []
    bar = ProgressBar()
    # the rows' config_name: --name, else the configuration's own readable name (core.presets.config_label): a
    # --preset seed --set dim=80 run is "seed · dim=80", never "seed"
    name = args.name or config_label(cfg)
    if args.ray is not None:  # one Ray task per point on the cluster at --ray (profiling.run.executor)
        from xtlens.profiling.run.worker import JobSpec

        spec = JobSpec.make(whats, cfg, workloads, options, config_name=name, time_limit_s=args.time_limit or None)
        rows = run_on_ray("profile", args.ray, spec, bar, noun="point", verb="measured",
                          store_failures=store_failures)
        if rows is None:
            return 1
    elif args.time_limit > 0:
        from xtlens.profiling.run.device import resolve
        from xtlens.profiling.run.worker import Job, JobSpec

        resolve(options.device)  # an unknown or absent device is a message and exit 2 here, as in-process

        job = follow(Job(JobSpec.make(whats, cfg, workloads, options, config_name=name,
                                      time_limit_s=args.time_limit)), bar)
        rows = job.result()
        store_failures = job.store_failures
    else:
        rows = run_sweep([(name, cfg)], workloads, what=whats, options=options, progress=bar,
                         on_store_error=lambda exc: store_failures.append(str(exc)))
    failed = [r for r in rows if r.status != "ok"]
    if args.out is not None:
        path = write_table(rows, args.out)
        print(f"wrote {len(rows)} row(s) to {path}" + (f" ({len(failed)} not ok)" if failed else ""), file=sys.stderr)
    else:
        sys.stdout.write(to_markdown(rows))
    for row in failed:
        print(f"  {row.measurement} {row.phase} batch={row.batch} seq_len={row.seq_len_tokens}: {row.status}: "
              f"{row.error}", file=sys.stderr)
    if store_failures:  # the rows are in --out (or on stdout) and in the spool, but not in the store: exit 2
        more = (f" (and {len(store_failures) - 1} more point(s) likewise, each in its own file in the same spool "
                "folder)" if len(store_failures) > 1 else "")
        print_error("profile", f"{store_failures[0]}{more}")
        return 2
    return 0


# --- results (the SQLite result store) ------------------------------------------------------------------

def _results(args: argparse.Namespace) -> int:
    from xtlens.profiling.results.export import format_for, frame_to_records, to_markdown, write_table
    from xtlens.profiling.results.store import open_store
    from xtlens.profiling.results.uploads import read_table_upload, read_upload_file

    store = open_store(args.db, write=args.action == "import")  # reading a read-only store is fine
    if args.action == "import":
        total = 0
        for path in args.files:
            content = read_upload_file("FILE", path)  # a regular file only: a named pipe is refused, never read
            try:
                fmt = format_for(path)
            except ValueError as exc:
                raise ConfigError("FILE", path, f"a results table xtlens can read ({exc})") from None
            # the one upload boundary: size cap, any parse failure a ConfigError naming the file, validated rows
            rows = frame_to_records(read_table_upload(str(path), content, fmt))
            if store.import_once(rows, content, name=str(path)) is None:
                print(f"{path}: already imported (a file with the same bytes), skipped", file=sys.stderr)
                continue
            total += len(rows)
            print(f"imported {len(rows)} row(s) from {path}", file=sys.stderr)
        print(f"{store.path}: {store.count()} row(s) in all", file=sys.stderr)
        return 0
    if args.action == "list":
        summary = store.summary()
        if summary.empty:
            print(f"{store.path}: no results stored yet (xtlens profile, the dashboard's Measure buttons and "
                  "`xtlens results import FILE` add them)", file=sys.stderr)
            return 0
        print(f"{store.path}: {store.count()} row(s)", file=sys.stderr)
        sys.stdout.write(_plain_table(summary))
        return 0
    frame = _query(store, args)
    if args.action == "show":
        if frame.empty:
            print("no stored row matches", file=sys.stderr)
            return 0
        sys.stdout.write(to_markdown(frame) if args.format == "md" else _plain_table(frame[_SHOW_COLUMNS]))
        return 0
    # export
    try:
        path = write_table(frame, args.file)
    except ValueError as exc:
        raise ConfigError("FILE", args.file, str(exc)) from None
    print(f"wrote {len(frame)} row(s) to {path}", file=sys.stderr)
    return 0


_SHOW_COLUMNS = ["id", "timestamp", "config_name", "config_key", "measurement", "phase", "component", "batch",
                 "seq_len_tokens", "dtype", "device_name", "status", "source", "host", "attempts"]


def _query(store, args: argparse.Namespace):
    ids = [int(i) for i in args.id] if args.id else None
    return store.query(ids=ids, config=args.config, device=args.device, dtype=args.dtype, seq_len=args.seq_len,
                       measurement=args.measurement, status=args.status, since=args.since, until=args.until,
                       limit=args.limit)


def _plain_table(frame) -> str:
    text = frame.astype(object).where(frame.notna(), "").astype(str)
    widths = {c: max(len(str(c)), *(len(v) for v in text[c])) for c in text.columns}
    lines = ["  ".join(f"{c:<{widths[c]}}" for c in text.columns)]
    lines += ["  ".join(f"{v:<{widths[c]}}" for c, v in zip(text.columns, row, strict=True)) for row in text.itertuples(index=False)]
    return "\n".join(line.rstrip() for line in lines) + "\n"


# --- calibrate (latency terms of this device) ------------------------------------------------------------

CALIBRATE_OUT_SUFFIXES = (".json", ".csv", ".parquet")
STORE_RESERVE_S = 1.5  # kept back from --time-budget: storing, printing, the interpreter starting and ending


def _calibrate(args: argparse.Namespace) -> int:
    from xtlens.profiling.measure.calibrate import MAX_BUDGET_S, MIN_BUDGET_S

    if not MIN_BUDGET_S <= args.time_budget <= MAX_BUDGET_S:
        raise ConfigError("--time-budget", args.time_budget,
                          f"a number of seconds from {MIN_BUDGET_S:g} to {MAX_BUDGET_S:g} (default 60)")
    if args.out is not None and Path(args.out).suffix.lower() not in CALIBRATE_OUT_SUFFIXES:
        raise ConfigError("--out", args.out, "a file ending in " + ", ".join(CALIBRATE_OUT_SUFFIXES) + " (.json: the "
                          "calibration; .csv / .parquet: one row per measured point)")
    from xtlens.profiling.results import calibrations as stored

    if args.list:
        every = stored.stored_calibrations(args.db)
        if not every:
            print("no calibration stored yet: run xtlens calibrate", file=sys.stderr)
        for cal in every:
            slow = "".join(f"; {s.dtype} {s.slowdown_vs_float32:,.0f}x slower than float32" for s in cal.slow_dtypes)
            print(f"{cal.device:<5} {cal.key} ({cal.wall_s:.1f} s{slow})")
        return 0
    if args.show is not None:
        cal = stored.latest_calibration(args.show, args.db)
        if cal is None:
            raise ConfigError("--show", args.show, "cpu, cuda or a device name of a stored calibration (xtlens "
                              "calibrate --list names them)")
        _calibration_out(cal, args)
        return 0
    from xtlens.profiling.measure.calibrate import calibrate
    from xtlens.profiling.run.device import resolve

    resolve(args.device)  # an unknown or absent device is a message here, before the store is made
    store = stored.ready(args.db)  # a store that cannot be written stops here, before a minute of measuring

    # the budget is the whole command's: what starting it took (Python, torch's import, the store) comes off it
    started = getattr(args, "started_at", None) or time.monotonic()
    spent = time.monotonic() - started
    cal = calibrate(args.device, time_budget_s=max(MIN_BUDGET_S, args.time_budget - spent - STORE_RESERVE_S),
                    progress=ProgressBar())
    stored.save_calibration(cal, store.path)
    _calibration_out(cal, args)
    print(f"stored in {store.path} (xtlens estimate --hardware {cal.device} uses it); "
          f"{time.monotonic() - started:.1f} s since the command started", file=sys.stderr)
    return 0


def _calibration_out(cal, args: argparse.Namespace) -> None:
    """Write ``--out`` (if given) and print the calibration in ``--format``."""
    from xtlens.profiling.results.calibrations import calibration_rows, calibration_summary

    if args.out is not None:
        out = Path(args.out)
        try:
            if out.suffix.lower() == ".json":
                out.write_text(json.dumps(cal.to_dict(), indent=1, sort_keys=True) + "\n")
            elif out.suffix.lower() == ".csv":
                calibration_rows(cal).to_csv(out, index=False)
            else:
                calibration_rows(cal).to_parquet(out, index=False)
        except OSError as exc:
            raise ConfigError("--out", args.out, f"a file that can be written ({exc.strerror or exc})") from None
        print(f"wrote the calibration to {out}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(cal.to_dict(), indent=1, sort_keys=True))
    else:
        print(calibration_summary(cal))


# --- dashboard ------------------------------------------------------------------------------------------

def dashboard_command(*, port: int | None = None, headless: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """The command ``xtlens dashboard`` runs: ``python -m streamlit run dashboard/app.py ...``."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP), "--browser.gatherUsageStats", "false"]
    if port is not None:
        cmd += ["--server.port", str(port)]
    if headless:
        cmd += ["--server.headless", "true"]
    return cmd + list(extra)


def _dashboard(args: argparse.Namespace) -> int:
    if not DASHBOARD_APP.exists():
        from xtlens.profiling.errors import ProfileError

        raise ProfileError(f"the dashboard app is missing: {DASHBOARD_APP}")
    try:
        return subprocess.run(dashboard_command(port=args.port, headless=args.headless, extra=args.streamlit_args)
                              ).returncode
    except KeyboardInterrupt:
        return 130


# --- parser -------------------------------------------------------------------------------------------

def _add_setup_options(p: argparse.ArgumentParser) -> None:
    from xtlens.core.setup import KV_CACHE, LOOPS, OPTIMIZERS, PRECISIONS, RECOMPUTE

    t = p.add_argument_group("training setup (any of these makes training_total_bytes the per-device peak under it)")
    t.add_argument("--precision", choices=PRECISIONS, help="fp32; bf16/fp16 pure half precision; amp_bf16/amp_fp16 "
                   "autocast with fp32 master weights (default auto: the --dtype for everything)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help="default adamw")
    t.add_argument("--recompute", choices=RECOMPUTE, help="activation recomputation (default none)")
    t.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (--batch is the micro-batch)")
    t.add_argument("--dp", type=int, help="data-parallel degree (default 1)")
    t.add_argument("--zero", type=int, help="ZeRO stage 0-3 (needs --dp >= 2)")
    t.add_argument("--tp", type=int, help="tensor-parallel degree (divides heads, K/V heads or a multiple of them)")
    t.add_argument("--loop", choices=LOOPS, help="free_logits: loss = f(model(x)) (default); keep_logits: logits "
                   "alive through backward()")
    s = p.add_argument_group("serving setup")
    s.add_argument("--weights-bits", choices=("auto", "16", "8", "4"), help="served weight precision (default auto: "
                   "--dtype)")
    s.add_argument("--group-size", type=int, help="int8/int4 quantisation group (input features, default 128)")
    s.add_argument("--kv-bits", choices=("auto", *KV_CACHE), help="KV-cache precision (default auto: --dtype)")
    s.add_argument("--concurrent", type=int, help="concurrent sequences (default --batch)")
    s.add_argument("--context-len", type=int, help="context length per sequence (default --seq-len)")
    p.add_argument("--device-memory-gib", metavar="GIB|GPU", default=None,
                   help="device memory in GiB or a GPU name (e.g. 'H100 80GB'): adds the largest batch and sequence "
                   "length that fit, for training and serving (fits_* keys)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xtlens", description="Parameters, FLOPs, memory and latency of an "
                                     "x-transformers decoder.")
    sub = parser.add_subparsers(dest="command", required=True)

    est = sub.add_parser("estimate", help="closed-form parameters, FLOPs and memory (instant, no torch)",
                         description="Closed-form cost model (core.cost_model.estimate) for one configuration.")
    add_config_options(est)
    est.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the model's max_seq_len)")
    est.add_argument("--batch", type=int, default=1)
    est.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    est.add_argument("--format", choices=("json", "csv", "table", "rows"), default="json",
                     help="json / csv: one flat record; table: aligned, with units; rows: one CSV row per predicted "
                          "quantity with its phase, component, unit and variant (the vocabulary of measured rows)")
    est.add_argument("--hardware", default=None, metavar="NAME",
                     help="add roofline latency predictions (predicted_forward_ms, predicted_train_step_ms, "
                          "predicted_decode_ms_per_token) for a GPU preset (e.g. h200, 'H100 PCIe'), 'cpu' (calibrates "
                          "this machine in seconds: see 'list') or 'list' (name the presets)")
    _add_setup_options(est)
    est.set_defaults(run=_estimate)

    prof = sub.add_parser("profile", help="measure FLOPs, memory and latency of the real model",
                          description="Sweep the real model over sequence lengths and batch sizes; write a table "
                                      "the dashboard can load.")
    add_config_options(prof)
    prof.add_argument("--name", help="config_name in the rows (default: the configuration's readable name, its "
                      "differences to the nearest preset, e.g. 'seed · dim=80')")
    prof.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    prof.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    prof.add_argument("--seq-lens", default=None, metavar="N,N,...", help="default 128,256,...,8192")
    prof.add_argument("--batch", default="1", metavar="N[,N...]", help="batch size(s), default 1")
    prof.add_argument("--what", default="flops,memory,latency", help="any of flops,flops_breakdown,memory,latency,"
                      "breakdown,whatif (flops_breakdown: flops plus per-module and per-operator rows of the same count; "
                      "breakdown: latency split into parts of the model; whatif: other attention implementations)")
    prof.add_argument("--attention", default=None, metavar="IMPL,...",
                      help="what-if implementations for --what whatif: asbuilt,flex,flex_compiled,cudnn,compile,cudagraphs "
                           "(default asbuilt,flex,cudnn,compile,cudagraphs; asbuilt is always measured)")
    prof.add_argument("--per-layer", action="store_true",
                      help="--what breakdown: also split each part by block (components like qkv_proj@0)")
    prof.add_argument("--phases", default=None, help="e.g. forward,train_step (default: each measurement's own)")
    prof.add_argument("--repeats", type=int, default=5, help="timed repeats per latency point (default 5)")
    prof.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls (default 2)")
    prof.add_argument("--sdpa-backend", default=None, choices=("flash", "efficient", "cudnn", "math"))
    prof.add_argument("--no-cache", action="store_true", help="measure again even when a cached result exists")
    prof.add_argument("--time-limit", type=time_limit_s, default=DEFAULT_TIME_LIMIT_S, metavar="S",
                      help=f"run in a child process killed after S seconds (unfinished points: status timeout; "
                      f"default {DEFAULT_TIME_LIMIT_S:g}); 0 = no limit, measure in this process")
    prof.add_argument("--out", default=None, metavar="FILE", help=".csv, .json, .parquet or .md (default: Markdown "
                      "on stdout)")
    prof.add_argument("--ray", default=None, metavar="ADDRESS", help="run one Ray task per point on the cluster at "
                      "ADDRESS (host:port, ray://host:10001, or auto = $RAY_ADDRESS / the cluster on this machine)")
    prof.set_defaults(run=_profile)

    res = sub.add_parser("results", help="the result database: list, show, import FILE, export FILE",
                         description="Every measured row is stored in one SQLite database ($XTLENS_DB, default "
                                     ".xtlens-cache/results.sqlite).")
    res.add_argument("--db", default=None, metavar="FILE", help="the database (default $XTLENS_DB or "
                     ".xtlens-cache/results.sqlite)")
    rsub = res.add_subparsers(dest="action", required=True)
    rsub.add_parser("list", help="one line per configuration, measurement, device and dtype")
    show = rsub.add_parser("show", help="the stored rows that match the filters, newest first")
    show.add_argument("--format", choices=("table", "md"), default="table")
    exp = rsub.add_parser("export", help="write the matching rows to FILE (.csv, .json, .parquet or .md)")
    exp.add_argument("file", metavar="FILE")
    for p in (show, exp):
        p.add_argument("--id", action="append", default=[], metavar="N", type=bounded_int(1, 2**63 - 1),
                       help="only this row id (repeatable)")
        p.add_argument("--config", default=None, help="config key prefix or part of the config name")
        p.add_argument("--device", default=None, help="part of the device or device name, e.g. H100 or cpu")
        p.add_argument("--dtype", default=None)
        p.add_argument("--seq-len", type=bounded_int(1, 2**63 - 1), default=None)
        p.add_argument("--measurement", default=None, choices=("flops", "memory", "latency", "estimate"))
        p.add_argument("--status", default=None, choices=("ok", "oom", "error", "timeout"))
        p.add_argument("--since", default=None, metavar="DATE", help="measured on or after, e.g. 2026-11-01")
        p.add_argument("--until", default=None, metavar="DATE", help="measured on or before, e.g. 2026-11-30")
        p.add_argument("--limit", type=bounded_int(1, 2**63 - 1), default=None, help="at most N rows")
    imp = rsub.add_parser("import", help="add the rows of tables written by xtlens profile --out (or the dashboard)")
    imp.add_argument("files", nargs="+", metavar="FILE", help=".csv, .json or .parquet")
    res.set_defaults(run=_results)

    from xtlens.profiling.benefit.cli import add_probe_parser

    add_probe_parser(sub)  # xtlens probe {scaling,stability,extrapolation,heads}

    cal = sub.add_parser("calibrate", help="measure this device's latency terms (about a minute) and store them",
                         description="Measure what a roofline leaves out (launch and module overheads, element-wise "
                                     "bandwidth, matrix-product throughput against shape per dtype, attention per SDPA "
                                     "backend; a dtype this device emulates is measured small and named with its "
                                     "slowdown) within --time-budget seconds, and store it in the result database.")
    cal.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: cuda when there is one)")
    cal.add_argument("--time-budget", type=float, default=60.0, metavar="S",
                     help="at most this many seconds for the whole command, starting torch included (5 to 3600, "
                          "default 60)")
    cal.add_argument("--format", choices=("table", "json"), default="table", help="what to print (default table)")
    cal.add_argument("--out", default=None, metavar="FILE", help="also write it: .json (the calibration) or .csv / "
                     ".parquet (one row per measured point)")
    cal.add_argument("--db", default=None, metavar="FILE", help="the result database (default $XTLENS_DB or "
                     ".xtlens-cache/results.sqlite)")
    shown = cal.add_mutually_exclusive_group()
    shown.add_argument("--list", action="store_true", help="measure nothing: list the stored calibrations, newest first")
    shown.add_argument("--show", default=None, metavar="NAME", help="measure nothing: print (and --out) the newest "
                       "stored calibration of NAME (cpu, cuda, or part of a device name, e.g. h200)")
    cal.set_defaults(run=_calibrate)

    dash = sub.add_parser("dashboard", help="open the Streamlit dashboard")
    dash.add_argument("--port", type=int, default=None)
    dash.add_argument("--headless", action="store_true", help="do not open a browser")
    dash.add_argument("streamlit_args", nargs=argparse.REMAINDER, help="further arguments for streamlit run")
    dash.set_defaults(run=_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started_at = time.monotonic()  # ``calibrate``'s budget is the whole command's
    try:
        return int(args.run(args))
    except XtlensError as exc:  # ConfigError, BuildError, ProfileError: a message for the user, exit 2
        print_error(args.command, str(exc))
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `xtlens estimate --format table | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
