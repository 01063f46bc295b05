"""The workloads of `peft-wgpu bench` (SPEC §13) in PyTorch eager, for comparison.

Prints one JSON object per line, as `peft-wgpu bench --json` does: `{"name", "ms", ...}` with
`gflops` or `gbps` where they apply and, on CUDA, `peak_bytes` of a training step. `ms` is
the median wall time of one run after a warm-up run, with the device synchronised inside
the timed region. Runs on CUDA when available, else on the CPU (use --device to choose).

    python bench/pytorch_baseline.py [--device cpu|cuda] [--repeats N] [--filter TEXT]

The models are written in plain torch (no transformers or peft needed) and follow the
same maths as the Rust workloads: a ViT-B/16 layer (D 768, 197 tokens, 12 heads, MLP 3072,
LayerNorm eps 1e-12, exact GELU, attention through `scaled_dot_product_attention`), batch
8, loss = mean of the squared layer output, backward to the trainable tensors and to the
input, then `torch.optim.AdamW` (lr 1e-3). LoRA is PEFT's (r 8, alpha 16 on query and
value, B A never formed); MoPPA is the pre-filter of SPEC §3 on the 14x14 grid. The tiny
ViT is the demo's architecture (8x8 images of 1 channel in 2x2 patches, width 32, 2 layers
of 4 heads, MLP 64, 5 labels), batch 64, MoPPA on every layer plus the classifier,
cross-entropy, AdamW.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F


def dct_matrix(n, device):
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    c = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(device=device, dtype=torch.float32)


def spectral_filter(x, r, c):
    """IDCT2(DCT2(x) * r) per channel on x [B, g, g, C] (r [g, g, C], c the DCT matrix).

    Each 1-D transform is one broadcast matrix product on a view (no permutes): twice as
    fast on the CPU as the equivalent einsum.
    """
    b, g, _, ch = x.shape
    s = c @ x.reshape(b, g, g * ch)  # along h
    s = (c @ s.reshape(b * g, g, ch)).reshape(b, g, g, ch)  # along w
    s = (s * r).reshape(b, g, g * ch)
    s = c.T @ s
    return (c.T @ s.reshape(b * g, g, ch)).reshape(b, g, g, ch)


class Moppa(torch.nn.Module):
    """The MoPPA pre-filter of SPEC §3 for one layer (K shared in a real model)."""

    def __init__(self, g, d_model, heads, device):
        super().__init__()
        d = d_model // heads
        self.g, self.heads = g, heads
        self.k = torch.nn.Parameter(torch.ones(3, g, g, heads, device=device))
        t = torch.empty(3, d, device=device)
        t[0].normal_(0.05, 0.01)
        t[1].normal_(0.05, 0.01)
        t[2].normal_(0.5, 0.1)
        self.t = torch.nn.Parameter(t)
        self.logits = torch.nn.Parameter(torch.randn(3, heads, device=device))
        self.tau = torch.nn.Parameter(torch.full((heads,), 5.0, device=device))
        n = torch.arange(g, device=device, dtype=torch.float32) * math.pi / g
        self.register_buffer("w2", (n[:, None] ** 2 + n[None, :] ** 2)[:, :, None])
        self.register_buffer("c", dct_matrix(g, device))

    def response(self):
        e = torch.relu(self.k.unsqueeze(-1) * self.t[:, None, None, None, :])  # [3, g, g, H, d]
        e = e.reshape(3, self.g, self.g, -1)
        g_heat = torch.exp(-e[0] * self.w2)
        g_wave = torch.cos(e[1] * self.w2)
        g_poisson = e[2]
        pi = torch.softmax(self.logits / self.tau, dim=0)  # [3, H]
        pi = pi.repeat_interleave(e.shape[-1] // self.heads, dim=1)  # [3, C]
        return pi[0] * g_heat + pi[1] * g_wave + pi[2] * g_poisson

    def forward(self, x):
        b, t, ch = x.shape
        grid = x[:, t - self.g * self.g :].reshape(b, self.g, self.g, ch)
        y = spectral_filter(grid, self.response(), self.c).reshape(b, self.g * self.g, ch)
        return torch.cat([x[:, : t - self.g * self.g], y], dim=1)


class LoraLinear(torch.nn.Module):
    def __init__(self, base, r, alpha, device):
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(torch.empty(r, base.in_features, device=device))
        torch.nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, r, device=device))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.scale * ((x @ self.a.T) @ self.b.T)


class Layer(torch.nn.Module):
    """LN -> attention -> residual -> LN -> GELU MLP -> residual, as transformers' ViTLayer."""

    def __init__(self, d, heads, mlp, device, eps=1e-12):
        super().__init__()
        lin = lambda i, o: torch.nn.Linear(i, o, device=device)  # noqa: E731
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(d, eps=eps, device=device)
        self.q, self.k, self.v, self.o = lin(d, d), lin(d, d), lin(d, d), lin(d, d)
        self.ln2 = torch.nn.LayerNorm(d, eps=eps, device=device)
        self.fc1, self.fc2 = lin(d, mlp), lin(mlp, d)
        self.prefilter = None

    def forward(self, x):
        b, t, d = x.shape
        xf = self.prefilter(x) if self.prefilter is not None else x
        h = self.ln1(xf)
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)))
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median(values):
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def timed(device, run, warmup, repeats):
    """Median wall time in ms of a run ended by a device synchronisation (SPEC §13), all the
    runs' wall times, and on CUDA the median device time between CUDA events recorded before
    and after each run (peft-wgpu's `gpu_ms` counterpart), else None."""
    for _ in range(warmup):
        run()
    sync(device)
    walls, events = [], []
    for _ in range(repeats):
        cuda = device.type == "cuda"
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start = time.perf_counter()
        if cuda:
            begin.record()
        run()
        if cuda:
            end.record()
        sync(device)
        walls.append((time.perf_counter() - start) * 1e3)
        if cuda:
            events.append(begin.elapsed_time(end))
    return median(walls), walls, (median(events) if events else None)


def peak_of(device, run):
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device))


def layer_step(device, kind, batch=8, d=768, heads=12, mlp=3072, g=14):
    torch.manual_seed(0)
    layer = Layer(d, heads, mlp, device)
    for p in layer.parameters():
        p.requires_grad_(kind == "full")
    if kind == "lora":
        layer.q = LoraLinear(layer.q, 8, 16, device)
        layer.v = LoraLinear(layer.v, 8, 16, device)
    if kind == "moppa":
        layer.prefilter = Moppa(g, d, heads, device)
    params = [p for p in layer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    x = torch.randn(batch, 1 + g * g, d, device=device, requires_grad=True)

    def step():
        opt.zero_grad(set_to_none=True)
        x.grad = None
        loss = layer(x).pow(2).mean()
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in params)


def tiny_vit_step(device, batch=64, d=32, heads=4, mlp=64, layers=2, image=8, patch=2, labels=5):
    torch.manual_seed(0)
    g = image // patch
    embed = torch.nn.Conv2d(1, d, patch, stride=patch, device=device)
    cls = torch.randn(1, 1, d, device=device) * 0.02
    pos = torch.randn(1, 1 + g * g, d, device=device) * 0.02
    blocks = torch.nn.ModuleList(Layer(d, heads, mlp, device, eps=1e-6) for _ in range(layers))
    norm = torch.nn.LayerNorm(d, eps=1e-6, device=device)
    head = torch.nn.Linear(d, labels, device=device)
    for m in [embed, blocks, norm]:
        for p in m.parameters():
            p.requires_grad_(False)
    filters = [Moppa(g, d, heads, device) for _ in range(layers)]
    shared_k = filters[0].k  # K is shared by every layer (SPEC §3)
    for f, block in zip(filters, blocks):
        f.k = shared_k
        block.prefilter = f
    params = list({id(p): p for f in filters for p in f.parameters()}.values()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    images = torch.randn(batch, 1, image, image, device=device)
    targets = torch.randint(0, labels, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        x = embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([cls.expand(batch, -1, -1), x], dim=1) + pos
        for block in blocks:
            x = block(x)
        loss = F.cross_entropy(head(norm(x)[:, 0]), targets)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in params)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default per workload)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--filter", default="", help="only workloads whose name contains this")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 products, as on the wgpu side
    torch.backends.cudnn.allow_tf32 = False
    print(
        f"# torch {torch.__version__} on {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {torch.get_num_threads()} threads"),
        file=sys.stderr,
    )

    def report(name, timing, rate=None, amount=None, **extra):
        ms, runs, gpu_ms = timing
        line = {"name": name, "ms": round(ms, 3)}
        if rate:
            line[rate] = round(amount / (ms * 1e-3), 3)
        if gpu_ms is not None:
            line["gpu_ms"] = round(gpu_ms, 4)
            if rate:
                line["gpu_" + rate] = round(amount / (gpu_ms * 1e-3), 3)
        line.update({k: v for k, v in extra.items() if v is not None})
        line["runs_ms"] = [round(t, 3) for t in runs]
        print(json.dumps(line), flush=True)

    def want(name):
        return args.filter in name

    reps = lambda default: args.repeats or default  # noqa: E731

    if want("matmul_1024"):
        a = torch.randn(1024, 1024, device=device)
        b = torch.randn(1024, 1024, device=device)
        t = timed(device, lambda: a @ b, args.warmup, reps(5))
        report("matmul_1024", t, "gflops", 2 * 1024**3 / 1e9)

    if want("spectral_filter_64x14x14x768"):
        x = torch.randn(64, 14, 14, 768, device=device)
        r = torch.rand(14, 14, 768, device=device) * 0.95 + 0.05
        c = dct_matrix(14, device)
        t = timed(device, lambda: spectral_filter(x, r, c), args.warmup, reps(7))
        report("spectral_filter_64x14x14x768", t, "gbps", 2 * x.numel() * 4 / 1e9)

    for kind in ["lora", "moppa", "full"]:
        name = f"vitb_block_{kind}_train_step_b8"
        if want(name):
            step, trained = layer_step(device, kind)
            t = timed(device, step, args.warmup, reps(3))
            report(name, t, peak_bytes=peak_of(device, step), note=f"{trained} trainable values")

    if want("tiny_vit_train_step_b64"):
        step, trained = tiny_vit_step(device)
        t = timed(device, step, args.warmup, reps(7))
        report("tiny_vit_train_step_b64", t, peak_bytes=peak_of(device, step), note=f"{trained} trainable values")


if __name__ == "__main__":
    main()
