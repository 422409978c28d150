"""Per-window spread of the context gain: the old definition (first 4 positions vs second half) against the paired one
(the same targets from their last 1..4 inputs vs the whole window), on the extrapolation probe's ALiBi arm.

    .venv/bin/python benchmarks/context_gain_spread.py
"""
import torch
from xtlens.core.builder import build_model
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit.harness import CONTEXT_HEAD_TOKENS, evaluate, train_run
from xtlens.profiling.benefit.probes import ProbeOptions, load_data, plan

torch.set_num_threads(1)
opt = ProbeOptions(probe="extrapolation", base=PRESETS["seed"], seeds=(0,))
run = [r for r in plan(opt) if r.variant == "alibi"][0]
data = load_data(opt)
box = {}
def keep(cfg, seed, device):
    box["m"] = build_model(cfg, seed=seed).model
    return box["m"]
train_run(run, data, build=keep)
L = run.settings.seq_len
ev = evaluate(box["m"], data.val_ids, data.token_bytes, seq_len=L)
nll = ev["nll"]
old = nll[:, :CONTEXT_HEAD_TOKENS].mean(1) - nll[:, L // 2:].mean(1)
new = ev["context_gain_windows"]
print(f"{run.config_name} shift {run.cfg.shift_tokens} L={L} windows={nll.shape[0]}")
print(f"old: mean {old.mean():.4f} sd {old.std():.4f} se {old.std() / nll.shape[0] ** .5:.4f}")
print(f"new: mean {new.mean():.4f} sd {new.std():.4f} se {new.std() / nll.shape[0] ** .5:.4f}")
print(f"variance ratio old/new {(old.var() / new.var()):.2f}")
