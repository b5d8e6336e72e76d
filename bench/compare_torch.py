#!/usr/bin/python3
"""Times PyTorch (CPU) on layerserve_bench's cases and prints both side by side.

Case by case, runs layerserve_bench on the case and then times Debian's
PyTorch 1.13 on the same shapes (or reads a saved layerserve_bench JSON
output), and prints one row per case/dtype/direction:

  naive ms | fast ms | fast impl | fast/naive | torch ms | torch/fast | GFLOP/s

"torch/fast" > 1 means we are faster than PyTorch. A "(!)" after it marks a
row measured while the machine was busy (wall time well above the main
thread's CPU time, on either side): rerun those cases with --filter.

What is timed on the PyTorch side:
  conv fwd   F.conv2d(x, w, b) under torch.no_grad()
  conv bwd   torch.autograd.grad(y, (x, w, b), dout): the backward pass a
             PyTorch user pays for (the forward graph is built once, outside
             the timed loop)
  pool fwd   F.max_pool2d(x) under torch.no_grad() (no indices: the same work
             as ours)
  pool bwd   torch.autograd.grad(y, x, dout), which scatters through the
             indices saved by the forward pass. Ours is stateless and finds
             each window's argmax again from x; the "torch kernel ms" column
             shows aten's bare backward kernels (no autograd engine) for
             reference.

OpenBLAS: PyTorch's float64 conv runs im2col + GEMM on the system BLAS
(libblas.so.3 -> OpenBLAS), as our float64 path does. OpenBLAS 0.3.21 does
not recognize newer CPUs and falls back to its slow "Prescott" kernels; our
library re-runs its kernel selection (lib/layers/fast/openblas_kernels.cc),
so for a fair comparison this script exports the same OPENBLAS_CORETYPE
before importing torch (as bench/compare_torch_catalog.py does), unless it
is already set or --no-openblas-coretype is given; the header says which.

Use Debian's python (/usr/bin/python3), which has python3-torch; install it
with scripts/install-bench-deps.sh. Example:

  /usr/bin/python3 bench/compare_torch.py \\
      --bench build/bench/layerserve_bench --repetitions 5 --markdown
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_torch_catalog import best_openblas_coretype  # noqa: E402

# The cases of bench/layers_bench.cc, by name. conv: x, w, stride, pad.
# pool: x, (pool_height, pool_width), stride.
CASES = {
    "conv_seed": ("conv", (100, 3, 31, 31), (25, 3, 3, 3), 2, 1),
    "pool_seed": ("max_pool", (100, 3, 32, 32), (2, 2), 2, None),
    "conv_7x7": ("conv", (128, 3, 32, 32), (32, 3, 7, 7), 1, 3),
    "conv_3x3": ("conv", (32, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    "pool_3x3s2": ("max_pool", (32, 64, 56, 56), (3, 3), 2, None),
}
CASE_ORDER = list(CASES)

# A row whose wall time exceeds its main thread's CPU time by this factor
# (ours or torch's) was measured while something else held the cores.
DISTURBED = 1.25


def conv_flops(x, w, stride, pad):
    n, c, h, wd = x
    f, _, hh, ww = w
    ho = 1 + (h + 2 * pad - hh) // stride
    wo = 1 + (wd + 2 * pad - ww) // stride
    return 2.0 * n * f * c * hh * ww * ho * wo


def case_flops(name, direction):
    layer, x, w, stride, pad = CASES[name]
    if layer != "conv":
        return 0.0
    return conv_flops(x, w, stride, pad) * (2 if direction == "bwd" else 1)


# ---- our side -------------------------------------------------------------


def run_ours(binary, repetitions, min_time, bench_filter):
    """Runs layerserve_bench; returns its JSON document and the command."""
    cmd = [
        binary,
        "--benchmark_format=json",
        f"--benchmark_repetitions={repetitions}",
        "--benchmark_report_aggregates_only=true",
        f"--benchmark_min_time={min_time}",
    ]
    if bench_filter:
        cmd.append(f"--benchmark_filter={bench_filter}")
    print("running:", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout), cmd


def parse_ours(doc, stat):
    """{(case, dtype, dir, impl): {"ms", "gflops", "label"}} for one statistic.

    With repetitions the aggregate rows are used (stat: median, mean or min
    when the binary computed it); a single run's iteration rows otherwise.
    """
    rows = {}
    for b in doc.get("benchmarks", []):
        if b.get("error_occurred"):
            continue
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != stat:
            continue
        name = b.get("run_name", b["name"])
        parts = name.split("/")
        if len(parts) < 4:
            continue
        key = tuple(parts[:4])
        if b.get("run_type") != "aggregate" and key in rows:
            # Repetitions without aggregates: keep the first.
            continue
        ms = b.get("ms", b["real_time"])
        rows[key] = {
            "ms": ms,
            "gflops": b.get("GFLOP/s"),
            "label": b.get("label", ""),
            # The main thread's CPU time: it computes too, so wall time far
            # above it means the thread was descheduled (a busy machine).
            "wall_per_cpu": b["real_time"] / max(b["cpu_time"], 1e-12),
        }
    return rows


# ---- PyTorch side ---------------------------------------------------------


def time_call(fn, repetitions, min_time, stat):
    """(milliseconds per call, wall / main-thread CPU time).

    `repetitions` runs of >= min_time seconds, reduced by `stat`. The second
    value, over all runs, is ~1 unless the machine was busy: torch's main
    thread computes (or spins at barriers) for the whole call.
    """
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    iters = max(1, int(min_time / once))
    samples = []
    wall = cpu = 0.0
    for _ in range(repetitions):
        start, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(iters):
            fn()
        elapsed = time.perf_counter() - start
        wall += elapsed
        cpu += time.thread_time() - start_cpu
        samples.append(elapsed / iters * 1e3)
    wall_per_cpu = wall / max(cpu, 1e-12)
    if stat == "min":
        return min(samples), wall_per_cpu
    if stat == "mean":
        return statistics.mean(samples), wall_per_cpu
    return statistics.median(samples), wall_per_cpu


def torch_calls(torch, name, dtype_name, direction):
    """(user-facing call, bare-kernel call or None) for one row."""
    F = torch.nn.functional
    dtype = torch.float32 if dtype_name == "f32" else torch.float64
    gen = torch.Generator().manual_seed(1)
    layer, xs, ws, stride, pad = CASES[name]
    x = torch.randn(xs, dtype=dtype, generator=gen)
    if layer == "conv":
        w = torch.randn(ws, dtype=dtype, generator=gen)
        b = torch.randn(ws[0], dtype=dtype, generator=gen)
        if direction == "fwd":

            def fwd():
                with torch.no_grad():
                    return F.conv2d(x, w, b, stride=stride, padding=pad)

            return fwd, None
        xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
        y = F.conv2d(xg, wg, bg, stride=stride, padding=pad)
        dout = torch.randn(y.shape, dtype=dtype, generator=gen)

        def bwd():
            return torch.autograd.grad(y, (xg, wg, bg), dout, retain_graph=True)

        def kernel():
            return torch.ops.aten.convolution_backward(
                dout, x, w, [ws[0]], [stride, stride], [pad, pad], [1, 1],
                False, [0, 0], 1, [True, True, True])

        return bwd, kernel
    k = list(ws)
    if direction == "fwd":

        def fwd():
            with torch.no_grad():
                return F.max_pool2d(x, k, stride)

        return fwd, None
    xg = x.clone().requires_grad_()
    y = F.max_pool2d(xg, k, stride)
    dout = torch.randn(y.shape, dtype=dtype, generator=gen)
    with torch.no_grad():
        _, indices = F.max_pool2d(x, k, stride, return_indices=True)

    def bwd():
        return torch.autograd.grad(y, xg, dout, retain_graph=True)

    def kernel():
        return torch.ops.aten.max_pool2d_with_indices_backward(
            dout, x, k, [stride, stride], [0, 0], [1, 1], False, indices)

    return bwd, kernel


# ---- report ---------------------------------------------------------------


def machine():
    model, cores = platform.processor() or "?", os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        if m:
            model = m.group(1).strip()
    except OSError:
        pass
    return model, cores


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--bench", default="build/bench/layerserve_bench",
                     help="layerserve_bench binary to run (default %(default)s)")
    src.add_argument("--ours", help="read this layerserve_bench JSON output "
                     "instead of running the binary")
    ap.add_argument("--save", help="also write our JSON output here")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3,
                    help="seconds per repetition (both sides)")
    ap.add_argument("--stat", default="median", choices=["median", "mean", "min"],
                    help="statistic over repetitions (min: our side needs "
                    "the binary's 'min' aggregate)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads (ours uses every core)")
    ap.add_argument("--filter", default="",
                    help="regex over case names, e.g. 'conv_seed|pool_seed'")
    ap.add_argument("--no-openblas-coretype", action="store_true",
                    help="leave OPENBLAS_CORETYPE alone for torch")
    ap.add_argument("--markdown", action="store_true",
                    help="print a Markdown table (for bench/RESULTS.md)")
    args = ap.parse_args()

    coretype_note = "OPENBLAS_CORETYPE unset"
    if os.environ.get("OPENBLAS_CORETYPE"):
        coretype_note = (f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}"
                         " (from the environment)")
    elif not args.no_openblas_coretype:
        core = best_openblas_coretype()
        if core:
            # Before torch loads OpenBLAS, which reads the variable once.
            # Our binary inherits it too, which changes nothing: it would
            # pick the same kernels itself.
            os.environ["OPENBLAS_CORETYPE"] = core
            coretype_note = (f"OPENBLAS_CORETYPE={core} (set by this script, "
                             "as our library does for itself)")
    import torch  # late: --help works without torch, and after the env

    torch.set_num_threads(args.threads)
    names = [n for n in CASE_ORDER
             if not args.filter or re.search(args.filter, n)]
    cmd = None
    doc = None
    if args.ours:
        with open(args.ours) as f:
            doc = json.load(f)

    rows = []
    for name in names:
        if args.ours:
            ours = parse_ours(doc, args.stat)
        else:
            # Case by case, ours then PyTorch's, so that a burst of load on
            # the shared machine hits both sides of a row alike.
            part, cmd = run_ours(args.bench, args.repetitions, args.min_time,
                                 f"^{name}/")
            if doc is None:
                doc = part
            else:
                doc["benchmarks"].extend(part["benchmarks"])
            ours = parse_ours(part, args.stat)
        for dt in ("f32", "f64"):
            for direction in ("fwd", "bwd"):
                naive = ours.get((name, dt, direction, "naive"))
                fast = ours.get((name, dt, direction, "fast"))
                if fast is None:
                    continue
                call, kernel = torch_calls(torch, name, dt, direction)
                t_ms, t_disturbed = time_call(call, args.repetitions,
                                              args.min_time, args.stat)
                k_ms = (time_call(kernel, args.repetitions, args.min_time,
                                  args.stat)[0] if kernel else None)
                flops = case_flops(name, direction)
                rows.append({
                    "case": name, "dtype": dt, "dir": direction,
                    "naive_ms": naive["ms"] if naive else None,
                    "fast_ms": fast["ms"], "impl": fast["label"],
                    "speedup": naive["ms"] / fast["ms"] if naive else None,
                    "torch_ms": t_ms, "torch_kernel_ms": k_ms,
                    "vs_torch": t_ms / fast["ms"],
                    "gflops": flops / fast["ms"] * 1e-6 if flops else None,
                    "torch_gflops": flops / t_ms * 1e-6 if flops else None,
                    "disturbed": max(t_disturbed, fast["wall_per_cpu"],
                                     naive["wall_per_cpu"] if naive else 0)
                                 > DISTURBED,
                })
                print(f"  {name}/{dt}/{direction}: fast {fast['ms']:.4f} ms, "
                      f"torch {t_ms:.4f} ms", file=sys.stderr)
    if args.save and doc is not None:
        with open(args.save, "w") as f:
            json.dump(doc, f, indent=1)
    doc = doc or {}

    model, cores = machine()
    ctx = doc.get("context", {})
    header = [
        f"machine: {model}, {cores} cores; {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"{coretype_note}; ours: {ctx.get('layerserve_threads', '?')} threads",
        f"statistic: {args.stat} of {args.repetitions} repetitions "
        f"(>= {args.min_time} s each)",
    ]
    if cmd:
        header.append("ours, once per case: " + " ".join(cmd[:-1]) +
                      " --benchmark_filter=^<case>/")
    cols = ["case", "dtype", "dir", "naive ms", "fast ms", "fast impl",
            "fast/naive", "torch ms", "torch/fast", "GFLOP/s fast",
            "GFLOP/s torch", "torch kernel ms"]
    table = [[
        r["case"], r["dtype"], r["dir"], fmt(r["naive_ms"], ".3f"),
        fmt(r["fast_ms"], ".3f"), r["impl"], fmt(r["speedup"], ".1f"),
        fmt(r["torch_ms"], ".3f"),
        fmt(r["vs_torch"], ".2f") + (" (!)" if r["disturbed"] else ""),
        fmt(r["gflops"], ".1f"), fmt(r["torch_gflops"], ".1f"),
        fmt(r["torch_kernel_ms"], ".3f"),
    ] for r in rows]
    if args.markdown:
        for line in header:
            print(f"- {line}")
        print()
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join("---" for _ in cols) + "|")
        for t in table:
            print("| " + " | ".join(t) + " |")
    else:
        for line in header:
            print(line)
        widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c)
                  for i, c in enumerate(cols)]
        print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
        for t in table:
            print("  ".join(v.rjust(w) for v, w in zip(t, widths)))
    disturbed = [r for r in rows if r["disturbed"]]
    if disturbed:
        note = (f"(!) disturbed: wall time > {DISTURBED}x the main thread's "
                "CPU time, the machine was busy; rerun with --filter "
                + "|".join(sorted({r["case"] for r in disturbed})))
        print(f"\n{note}")
    behind = [r for r in rows if r["vs_torch"] < 1.0]
    if behind:
        print("\nnot ahead of PyTorch:", file=sys.stderr)
        for r in behind:
            print(f"  {r['case']}/{r['dtype']}/{r['dir']}: torch/fast "
                  f"{r['vs_torch']:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
