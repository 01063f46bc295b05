"""Fixture for tests/optim.rs: torch.optim.AdamW and torch.optim.SGD on a few parameters.

Writes tests/fixtures/adamw_torch.safetensors with
  param.{j}               f32 [shape_j]         initial values of parameter j
  grad.{t}.{j}            f32 [shape_j]         gradient of parameter j at step t (fixed)
  {case}.lr               f64 [STEPS]           learning rate of each step (set between steps)
  {case}.weight_decay     f64 [1]               (SGD: 0 means none)
  {case}.skip             u8  [STEPS, P]        1 where parameter j has no gradient at step t
  {case}.param.{j}        f64 [STEPS, numel_j]  parameter j after each step
  {case}.exp_avg.{j}      f64 [numel_j]         AdamW only: moments after the last step
  {case}.exp_avg_sq.{j}   f64 [numel_j]
Inputs are f32; torch runs in float64 from those f32 values. Run from the repository root.
"""

import numpy as np
import torch
from safetensors.numpy import save_file

STEPS = 6
SHAPES = [(3, 5), (7,), (1,), (2, 3, 2)]
# Gradient scales per parameter: 1e-6 makes ε matter in AdamW's denominator.
GRAD_SCALES = [1.0, 0.1, 1e-6, 10.0]
SCHEDULE = [1e-2, 1e-2, 5e-3, 2.5e-3, 1e-3, 1e-3]
NO_SKIP = []
SKIPS = [(0, 2), (2, 1), (3, 1), (4, 3)]  # (step, parameter) pairs without a gradient

CASES = {
    "adamw_lr1e-2_wd1e-2": ("adamw", [1e-2] * STEPS, 0.01, NO_SKIP),
    "adamw_lr1e-3_wd0": ("adamw", [1e-3] * STEPS, 0.0, NO_SKIP),
    "adamw_lr1e-2_wd0_skip": ("adamw", [1e-2] * STEPS, 0.0, SKIPS),
    "adamw_schedule_wd1e-2_skip": ("adamw", SCHEDULE, 0.01, SKIPS),
    "sgd_lr1e-1": ("sgd", [0.1] * STEPS, 0.0, NO_SKIP),
    "sgd_lr5e-2_wd1e-2_skip": ("sgd", [0.05] * STEPS, 0.01, SKIPS),
}


def main():
    rng = np.random.default_rng(12)
    out = {}
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [
        [(rng.standard_normal(s) * scale).astype(np.float32) for s, scale in zip(SHAPES, GRAD_SCALES)]
        for _ in range(STEPS)
    ]
    for j, p in enumerate(params):
        out[f"param.{j}"] = p
    for t in range(STEPS):
        for j, g in enumerate(grads[t]):
            out[f"grad.{t}.{j}"] = g

    for case, (kind, lrs, wd, skips) in CASES.items():
        ps = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
        if kind == "adamw":
            opt = torch.optim.AdamW(ps, lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, foreach=False)
        else:
            opt = torch.optim.SGD(ps, lr=lrs[0], weight_decay=wd, foreach=False)
        skip = np.zeros((STEPS, len(SHAPES)), dtype=np.uint8)
        for t, j in skips:
            skip[t, j] = 1
        history = [[] for _ in ps]
        for t in range(STEPS):
            for j, p in enumerate(ps):
                p.grad = None if skip[t, j] else torch.tensor(grads[t][j], dtype=torch.float64)
            opt.param_groups[0]["lr"] = lrs[t]
            opt.step()
            for j, p in enumerate(ps):
                history[j].append(p.detach().numpy().reshape(-1).copy())
        out[f"{case}.lr"] = np.array(lrs, dtype=np.float64)
        out[f"{case}.weight_decay"] = np.array([wd], dtype=np.float64)
        out[f"{case}.skip"] = skip
        for j, p in enumerate(ps):
            out[f"{case}.param.{j}"] = np.stack(history[j])
            if kind == "adamw":
                state = opt.state[p]
                out[f"{case}.exp_avg.{j}"] = state["exp_avg"].numpy().reshape(-1).copy()
                out[f"{case}.exp_avg_sq.{j}"] = state["exp_avg_sq"].numpy().reshape(-1).copy()
    save_file(out, "tests/fixtures/adamw_torch.safetensors")


if __name__ == "__main__":
    main()
