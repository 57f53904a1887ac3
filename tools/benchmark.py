#!/usr/bin/env python
"""Speed and size of every generator family: params, MACs, latency, images/s and peak memory per resolution."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asap.config  # noqa: E402,F401
from asap.cli import CONF_DIR, tool_main  # noqa: E402

HELP = """
usage: python tools/benchmark.py [models=[asapnet,spade]] [res=[256x512,512x1024]] [compare=[asapnet,spade]]
                                 [batch=1] [device=auto|cpu|cuda] [threads=N] [runs=5] [warmup=2] [out=FILE.json|.csv]

For every generator family described in conf/bench/<name>.yaml (a new family adds a file there): parameter count,
MACs (counted with torch.utils.flop_counter.FlopCounterMode; 1 MAC = 2 FLOPs; "GMACs" for the network as defined,
"run GMACs" for the timed call, fewer where an exact fast path such as Winograd runs), latency (warm-up runs, then the
median and spread of N timed runs under torch.inference_mode; CUDA timed with events after synchronisation),
images/s at the batch size, and peak memory of one forward pass (CUDA allocator peak, or CPU resident-set growth).
compare=[a,b] interleaves the models run by run, so machine drift hits all alike, and prints speed ratios.
train_step=true times one training step (Trainer.train_step: every phase, updates and EMA) of the families whose
conf/bench file has a train_step section (random images at the resolution, batch from its overrides), instead of
the generator; with several variants= (lists of extra overrides) they run interleaved and are compared.
"""


def parse_res(r) -> tuple[int, int]:
    from asap.errors import AsapError
    try:
        h, w = str(r).lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise AsapError(f"res entry {r!r} must look like 512x1024 (HxW)") from None


def bench_configs(names):
    from omegaconf import OmegaConf

    from asap.errors import AsapError
    available = {p.stem: p for p in sorted((CONF_DIR / "bench").glob("*.yaml"))}
    names = list(names) if names else list(available)
    unknown = [n for n in names if n.split("@")[0] not in available]
    if unknown:
        raise AsapError(f"unknown benchmark model {unknown[0]!r} (conf/bench has: {', '.join(available)})")
    out = {}
    for n in names:
        base, _, ratio = n.partition("@")
        cfg = OmegaConf.load(available[base])
        subs = [float(r) for r in cfg.get("sub_generators") or []]
        if ratio:  # one sub-generator of a family: name@ratio
            if float(ratio) not in subs:
                raise AsapError(f"{n}: {base} has no sub-generator {ratio} (conf/bench/{base}.yaml: {subs})")
            out[n] = OmegaConf.merge(cfg, {"ratio": float(ratio)})
            continue
        out[n] = cfg  # a family with sub-generators gives one row each: base (full), base@0.75, ...
        for r in subs:
            if r != 1.0:
                out[f"{n}@{r:g}"] = OmegaConf.merge(cfg, {"ratio": r})
    return out


def build(cfg, height: int, width: int, batch: int, device, dtype):
    """(generator, zero-arg forward closure) for one family at one resolution."""
    import torch
    from omegaconf import OmegaConf

    from asap.data.preprocess import semantic_input
    from asap.errors import AsapError
    from asap.pretrained.native import build as build_net

    node = OmegaConf.merge(cfg, {"width": width, "height": height, "aspect": width / height})
    gen_cfg = OmegaConf.to_container(node.generator, resolve=True)
    g = build_net(gen_cfg, f"{cfg.family} at {height}x{width}").to(device=device, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(0)
    if cfg.input == "semantic":
        spec = g.spec
        label = torch.randint(0, spec.label_nc, (batch, 1, height, width), generator=gen)
        inst = torch.randint(0, 4, (batch, 1, height, width), generator=gen)
        x = semantic_input(label, inst, spec).to(device=device, dtype=dtype)
        return g, lambda: g(x)
    if cfg.input == "synthesis":  # StyleGAN-type: time (and count) the synthesis network on fixed W+ latents
        with torch.no_grad():
            z = torch.randn(batch, g.z_dim, generator=gen).to(device=device, dtype=dtype)
            ws = g.broadcast(g.mapping(z))
        if node.get("ratio") is not None:  # a sub-generator (Anycost): channel ratio, full resolution
            g.set_sub_generator(ratio=float(node.ratio))

        def fn():
            return g.synthesis(ws, noise_mode="const")
        fn.trace_inputs = (ws,)  # what a tracing MAC counter (torchprofile) feeds the synthesis network
        return g.synthesis, fn
    if cfg.input == "latent":
        z = torch.randn(batch, int(node.get("z_dim", 512)), generator=gen).to(device=device, dtype=dtype)
        return g, lambda: g(z)
    raise AsapError(f"conf/bench: unknown input kind {cfg.input!r} (semantic|latent|synthesis)")


def architecture_and_executed_macs(g, fn) -> tuple[int, int]:
    """MACs of the network as defined (direct convolutions; what papers report) and of the timed call, which
    may take a cheaper exact path (ASAPNet's inference path runs its wide convs as Winograd)."""
    from asap.metrics.profile import count_macs

    executed = count_macs(fn)
    if not getattr(g, "fast_inference", False):
        return executed, executed
    g.fast_inference = False
    try:
        return count_macs(fn), executed
    finally:
        g.fast_inference = True


def train_step_rows(cfg, configs, resolutions, device):
    """Seconds per training step of each family (and variant), interleaved run by run."""
    import statistics

    import torch

    from asap.cli import compose
    from asap.errors import AsapError
    from asap.metrics.profile import time_once
    from asap.training.run import build_task
    from asap.training.trainer import Trainer
    from asap.utils.allocator import keep_freed_memory

    rows = []
    variants = [list(v) for v in (cfg.get("variants") or [[]])]
    for h, w in resolutions:
        built = {}
        for n, c in configs.items():
            if c.get("train_step") is None:
                print(f"{n}: no train_step section in conf/bench/{n}.yaml, skipped")
                continue
            for i, extra in enumerate(variants):
                overrides = [*c.train_step.overrides, f"data.image_size={w}", *map(str, extra)]
                tcfg = compose("train", overrides)
                if tcfg.trainer.get("keep_freed_memory", True):  # the allocator setting tools/train.py uses
                    keep_freed_memory()
                torch.manual_seed(int(cfg.seed))
                task = build_task(tcfg).to(device)
                batch_size = int(tcfg.data.batch_size)
                images = torch.rand(batch_size, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
                trainer = Trainer(task, None, None, "unused", max_steps=10 ** 9, batch_size=batch_size,
                                  progress=False, precision=tcfg.trainer.get("precision", 32))
                task.train(True)
                batch = {"image": images.to(device)}
                key = n if len(variants) == 1 else f"{n}[{i}]"
                built[key] = (trainer, batch, c, extra, batch_size)
        if not built:
            raise AsapError("train_step=true: no requested family has a train_step section")
        times = {k: [] for k in built}
        for k, (trainer, batch, *_rest) in built.items():
            for s in range(int(cfg.warmup)):
                trainer.step = s
                trainer.train_step(batch)
        for r in range(int(cfg.runs)):
            for k, (trainer, batch, *_rest) in built.items():
                trainer.step = int(cfg.warmup) + r
                times[k].append(time_once(lambda: trainer.train_step(batch), device))
        for k, (trainer, batch, c, extra, batch_size) in built.items():
            med = statistics.median(times[k])
            row = {"model": k, "res": f"{h}x{w}", "batch": batch_size, "device": str(device),
                   "threads": torch.get_num_threads(), "overrides": [str(e) for e in extra],
                   "step_s_median": med, "step_s_min": min(times[k]), "step_s_max": max(times[k])}
            ref = c.train_step.get("reference_s")
            if ref is not None and int(c.train_step.get("reference_res", w)) == w:
                row["reference_s"] = float(ref)
                row["ratio_to_reference"] = med / float(ref)
            rows.append(row)
    print(f"{'model':<14}{'res':>10}{'batch':>6}  {'s/step median':>14}{'min':>8}{'max':>8}  overrides")
    for r in rows:
        ref = f"  ({r['ratio_to_reference']:.2f}x the official {r['reference_s']:g} s)" if "reference_s" in r else ""
        print(f"{r['model']:<14}{r['res']:>10}{r['batch']:>6}  {r['step_s_median']:14.2f}{r['step_s_min']:8.2f}"
              f"{r['step_s_max']:8.2f}  {' '.join(r['overrides']) or '-'}{ref}")
    return rows


def paper_macs(g, fn) -> int | None:
    """MACs as torchprofile counts them (the Anycost/MobileStyleGAN papers' convention: a stride-2 transposed conv
    over its output grid, element-wise ops included); None when torchprofile is absent or cannot trace."""
    try:
        import warnings

        import torch
        from torchprofile import profile_macs
    except ImportError:
        return None
    inputs = getattr(fn, "trace_inputs", None)
    if inputs is None:
        return None

    class _Synthesis(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, ws):
            return self.net(ws, noise_mode="const")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(profile_macs(_Synthesis(g), inputs))
    except Exception:  # tracing is best effort: the column shows '-'
        return None


def run(cfg, positional):
    import torch

    from asap.errors import AsapError
    from asap.metrics.profile import count_params, latency, peak_memory_mb, summarize, time_once
    from asap.utils.device import resolve_device
    from asap.utils.io import atomic_path, check_outputs

    if positional:
        raise AsapError(f"unexpected argument {positional[0]!r}")
    if cfg.out:
        check_outputs([Path(str(cfg.out))])  # before measuring for minutes: out= must be a file we can write
    device = resolve_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(cfg.dtype))
    if dtype is None:
        raise AsapError(f"dtype={cfg.dtype} must be float32, bfloat16 or float16")
    torch.manual_seed(int(cfg.seed))
    names = list(cfg.compare) if cfg.compare else (list(cfg.models) if cfg.models else None)
    configs = bench_configs(names)
    resolutions = [parse_res(r) for r in (cfg.res if not isinstance(cfg.res, str) else [cfg.res])]
    batch = int(cfg.batch)
    if cfg.get("train_step", False):
        print(f"device={device} threads={torch.get_num_threads()} warmup={cfg.warmup} runs={cfg.runs} (training steps)")
        rows = train_step_rows(cfg, configs, resolutions, device)
        if cfg.out:
            with atomic_path(Path(str(cfg.out))) as tmp:
                tmp.write_text(json.dumps(rows, indent=1))
            print(f"wrote {cfg.out}")
        return 0
    print(f"device={device} threads={torch.get_num_threads()} batch={batch} dtype={cfg.dtype} "
          f"warmup={cfg.warmup} runs={cfg.runs} (MACs: 1 MAC = 2 FLOPs, FlopCounterMode)")
    rows = []
    for h, w in resolutions:
        fits = {n: c for n, c in configs.items() if h == w or not c.get("square", False)}
        for n in configs:
            if n not in fits:
                print(f"{n}: skipped at {h}x{w} (square images only; ask for res=[{w}x{w}])")
        built = {n: build(c, h, w, batch, device, dtype) for n, c in fits.items()}
        times = {n: [] for n in built}
        if cfg.compare:
            with torch.inference_mode():
                for n, (_, fn) in built.items():
                    for _ in range(int(cfg.warmup)):
                        fn()
                for _ in range(int(cfg.runs)):
                    for n, (_, fn) in built.items():  # interleaved: drift hits every model alike
                        times[n].append(time_once(fn, device))
        else:
            for n, (_, fn) in built.items():
                times[n] = latency(fn, device, int(cfg.warmup), int(cfg.runs))
        for n, (g, fn) in built.items():
            row = {"model": n, "res": f"{h}x{w}", "batch": batch, "device": str(device),
                   "threads": torch.get_num_threads(), "dtype": str(cfg.dtype), "params": count_params(g),
                   "macs": None, "macs_executed": None, **summarize(times[n])}
            if cfg.macs:
                row["macs"], row["macs_executed"] = architecture_and_executed_macs(g, fn)
                if configs[n].get("paper_macs", False):
                    row["macs_torchprofile"] = paper_macs(g, fn)
            row["images_per_s"] = batch / (row["latency_ms_median"] / 1000.0)
            row["peak_mem_mb"] = peak_memory_mb(fn, device) if cfg.memory else None
            rows.append(row)
        del built
    if not rows:
        raise AsapError("nothing to measure: every requested model was skipped at these resolutions")
    header = (f"{'model':<12}{'res':>11}{'batch':>6}{'params(M)':>11}{'GMACs':>10}{'run GMACs':>11}{'median ms':>11}"
              f"{'IQR ms':>9}{'img/s':>9}{'peak MB':>9}")
    print(header)
    for r in rows:
        macs = f"{r['macs'] / 1e9:10.2f}" if r["macs"] is not None else f"{'-':>10}"
        macs += f"{r['macs_executed'] / 1e9:11.2f}" if r["macs_executed"] is not None else f"{'-':>11}"
        mem = f"{r['peak_mem_mb']:9.0f}" if r["peak_mem_mb"] is not None else f"{'-':>9}"
        print(f"{r['model']:<12}{r['res']:>11}{r['batch']:>6}{r['params'] / 1e6:11.2f}{macs}"
              f"{r['latency_ms_median']:11.1f}{r['latency_ms_iqr']:9.1f}{r['images_per_s']:9.2f}{mem}")
    for r in rows:  # sub-generators against their full network (true MACs; torchprofile's count in brackets)
        if "@" in r["model"]:
            full = next((f for f in rows if f["model"] == r["model"].split("@")[0] and f["res"] == r["res"]), None)
            if full is not None:
                notes = []
                if r.get("macs") and full.get("macs"):
                    notes.append(f"{full['macs'] / r['macs']:.2f}x fewer MACs")
                    if r.get("macs_torchprofile") and full.get("macs_torchprofile"):
                        notes.append(f"torchprofile {full['macs_torchprofile'] / r['macs_torchprofile']:.2f}x")
                mac = f" ({', '.join(notes)})" if notes else ""
                print(f"{r['res']}: {r['model']} is {full['latency_ms_median'] / r['latency_ms_median']:.2f}x faster "
                      f"than {full['model']}{mac}")
    if any(r.get("macs_torchprofile") for r in rows):
        print("torchprofile GMACs: " + ", ".join(f"{r['model']} {r['res']} {r['macs_torchprofile'] / 1e9:.2f}"
                                                   for r in rows if r.get("macs_torchprofile")))
    if cfg.compare and len(configs) >= 2:
        base = list(configs)[0]
        for res in sorted({r["res"] for r in rows}, key=lambda s: [int(v) for v in s.split("x")]):
            by = {r["model"]: r for r in rows if r["res"] == res}
            for other in list(configs)[1:]:
                if base not in by or other not in by or other.split("@")[0] == base:  # sub-generators: lines above
                    continue
                speed = by[other]["latency_ms_median"] / by[base]["latency_ms_median"]
                mac = (f" (MAC ratio {by[other]['macs'] / by[base]['macs']:.2f}x)"
                       if by[base]["macs"] and by[other]["macs"] else "")
                print(f"{res}: {base} is {speed:.2f}x faster than {other}{mac}")
    if cfg.out:
        out = Path(str(cfg.out))
        with atomic_path(out) as tmp:
            if out.suffix.lower() == ".csv":
                with open(tmp, "w", newline="") as f:
                    wr = csv.DictWriter(f, fieldnames=list(rows[0]))
                    wr.writeheader()
                    wr.writerows(rows)
            else:
                tmp.write_text(json.dumps(rows, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("benchmark", run, HELP))
