#!/usr/bin/python3
"""Times PyTorch (CPU) on catalog_bench's cases and prints both side by side.

Runs catalog_bench (or reads its JSON output), then times Debian's PyTorch
1.13 on the same shapes, with the same number of threads, and prints one row
per case/dtype/direction:

  naive ms | fast ms | fast impl | fast/naive | torch ms | torch/fast | rates

"torch/fast" > 1 means we are faster than PyTorch. Rates are GFLOP/s for
affine (forward 2*N*D*M, backward twice that) and GB/s of least traffic for
the memory-bound layers (each input tensor read once, each output written
once; see bench/catalog_bench.cc).

What is timed on the PyTorch side (the forward graph for a backward row is
built once, outside the timed loop):
  affine      fwd torch.addmm(b, x, w) under no_grad (what nn.Linear runs;
              BLAS sgemm/dgemm); bwd autograd.grad(y, (x, w, b), dout)
  batchnorm,  fwd F.batch_norm(training=True) under no_grad (batch
  spatial_bn  statistics and the running-stat update);
              bwd autograd.grad(y, (x, gamma, beta), dout)
  dropout     fwd F.dropout(x, 0.5, training=True) (torch's p drops, ours
              keeps: 0.5 is the same layer); bwd autograd.grad(y, x, dout),
              which multiplies by the saved mask (ours recomputes the mask
              from the seed: stateless)
  softmax     fwd F.cross_entropy(x, y); bwd autograd.grad(loss, x)
  svm         fwd F.multi_margin_loss(x, y, margin=1) (it divides by C too;
              the same work); bwd autograd.grad(loss, x)

OpenBLAS: Debian's torch calls the system BLAS (libblas.so.3 -> OpenBLAS)
for addmm. OpenBLAS 0.3.21 does not recognize newer CPUs and falls back to
its slow "Prescott" kernels; our library re-runs its kernel selection
(lib/layers/fast/openblas_kernels.cc). For a fair comparison this script
exports the same OPENBLAS_CORETYPE (SkylakeX with AVX-512, Haswell with
AVX2+FMA) before importing torch, unless it is already set or
--no-openblas-coretype is given; the header says which.

Use Debian's python (/usr/bin/python3), which has python3-torch; install it
with scripts/install-bench-deps.sh. Example:

  /usr/bin/python3 bench/compare_torch_catalog.py \\
      --bench build/bench/catalog_bench --repetitions 5 --markdown
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

# The cases of bench/catalog_bench.cc, by name: (layer, x shape, affine M).
CASES = {
    "affine_fc": ("affine", (128, 3072), 1024),
    "affine_wide": ("affine", (512, 4096), 4096),
    "batchnorm": ("batchnorm", (128, 1024), None),
    "spatial_bn": ("spatial_batchnorm", (32, 64, 56, 56), None),
    "dropout": ("dropout", (32, 64, 56, 56), None),
    "softmax": ("softmax_loss", (4096, 1000), None),
    "svm": ("svm_loss", (4096, 1000), None),
}
CASE_ORDER = list(CASES)
ITEM_SIZE = {"f32": 4, "f64": 8}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def case_rate_work(name, dtype, direction):
    """(work, unit): flops for affine, least bytes moved otherwise."""
    layer, x, m = CASES[name]
    backward = direction == "bwd"
    if layer == "affine":
        return 2.0 * numel(x) * m * (2 if backward else 1), "GFLOP/s"
    loss = layer.endswith("_loss")
    bn = "batchnorm" in layer
    tensors = (3 if bn else 2) if backward else (1 if loss else 2)
    return float(tensors * numel(x) * ITEM_SIZE[dtype]), "GB/s"


# ---- OpenBLAS kernels for torch's process ----------------------------------


def best_openblas_coretype():
    """What lib/layers/fast/openblas_kernels.cc would pick, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^flags\s*:\s*(.*)$", f.read(), re.M)
    except OSError:
        return None
    flags = set(m.group(1).split()) if m else set()
    if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def cpu_idle_fraction(seconds=1.0):
    """Fraction of CPU time idle over `seconds` (from /proc/stat), or None."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)  # idle + iowait, total
    try:
        i0, t0 = sample()
        time.sleep(seconds)
        i1, t1 = sample()
    except OSError:
        return None
    return (i1 - i0) / max(1, t1 - t0)


def cpu_busy_seconds():
    """CPU seconds spent outside idle by the whole machine, or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Interference:
    """Measures how much CPU other processes used while a block ran, as a
    fraction of the machine (0 = we had it to ourselves)."""

    def __enter__(self):
        self.wall = time.time()
        self.busy = cpu_busy_seconds()
        self.own = own_cpu_seconds()
        return self

    def __exit__(self, *exc):
        wall = max(time.time() - self.wall, 1e-3)
        busy = cpu_busy_seconds()
        if busy is None or self.busy is None:
            self.fraction = None
            return False
        others = (busy - self.busy) - (own_cpu_seconds() - self.own)
        self.fraction = max(0.0, others) / (wall * (os.cpu_count() or 1))
        return False


def wait_idle(limit, threshold=0.9):
    """Waits up to `limit` seconds for a CPU >= threshold idle; returns the
    idle fraction last seen."""
    deadline = time.time() + limit
    idle = cpu_idle_fraction()
    while idle is not None and idle < threshold and time.time() < deadline:
        idle = cpu_idle_fraction()
    return idle


# ---- our side -------------------------------------------------------------


def run_ours(binary, repetitions, min_time, bench_filter):
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
    """{(case, dtype, dir, impl): {"ms", "label"}} for one statistic.

    "best" is the fastest single call (the best_ms counter, its minimum over
    the repetitions).
    """
    aggregate = "min" if stat == "best" else stat
    counter = "best_ms" if stat == "best" else "ms"
    rows = {}
    for b in doc.get("benchmarks", []):
        if b.get("error_occurred"):
            continue
        if (b.get("run_type") == "aggregate"
                and b.get("aggregate_name") != aggregate):
            continue
        parts = b.get("run_name", b["name"]).split("/")
        if len(parts) < 4:
            continue
        key = tuple(parts[:4])
        if b.get("run_type") != "aggregate" and key in rows:
            continue  # repetitions without aggregates: keep the first
        rows[key] = {"ms": b.get(counter, b["real_time"]),
                     "label": b.get("label", "")}
    return rows


# ---- PyTorch side ---------------------------------------------------------


def time_call(fn, repetitions, min_time, stat):
    """Milliseconds per call: `repetitions` runs of >= min_time seconds.

    "best" is the fastest single call over all of them.
    """
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    iters = max(1, int(min_time / once))
    samples = []
    best = float("inf")
    for _ in range(repetitions):
        start = time.perf_counter()
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        samples.append((time.perf_counter() - start) / iters * 1e3)
    if stat == "best":
        return best * 1e3
    if stat == "min":
        return min(samples)
    if stat == "mean":
        return statistics.mean(samples)
    return statistics.median(samples)


def torch_call(torch, name, dtype_name, direction):
    """The user-facing PyTorch call for one row."""
    F = torch.nn.functional
    dtype = torch.float32 if dtype_name == "f32" else torch.float64
    gen = torch.Generator().manual_seed(1)
    layer, xs, m = CASES[name]
    x = torch.randn(xs, dtype=dtype, generator=gen)
    fwd_only = direction == "fwd"

    def grad_of(make_output, inputs):
        leaves = [t.clone().requires_grad_() for t in inputs]
        y = make_output(*leaves)
        dout = (torch.randn(y.shape, dtype=dtype, generator=gen)
                if y.dim() > 0 else None)

        def bwd():
            return torch.autograd.grad(y, leaves, dout, retain_graph=True)

        return bwd

    def no_grad(fn):
        def fwd():
            with torch.no_grad():
                return fn()

        return fwd

    if layer == "affine":
        w = torch.randn((xs[1], m), dtype=dtype, generator=gen)
        b = torch.randn((m,), dtype=dtype, generator=gen)
        if fwd_only:
            return no_grad(lambda: torch.addmm(b, x, w))
        return grad_of(lambda x_, w_, b_: torch.addmm(b_, x_, w_), (x, w, b))
    if "batchnorm" in layer:
        c = xs[1]
        gamma = torch.randn((c,), dtype=dtype, generator=gen)
        beta = torch.randn((c,), dtype=dtype, generator=gen)
        rm = torch.zeros((c,), dtype=dtype)
        rv = torch.ones((c,), dtype=dtype)

        def bn(x_, g_, b_):
            # torch's momentum weighs the batch: ours 0.9 is torch's 0.1.
            return F.batch_norm(x_, rm, rv, g_, b_, training=True,
                                momentum=0.1, eps=1e-5)

        if fwd_only:
            return no_grad(lambda: bn(x, gamma, beta))
        return grad_of(bn, (x, gamma, beta))
    if layer == "dropout":
        if fwd_only:
            return no_grad(lambda: F.dropout(x, 0.5, training=True))
        return grad_of(lambda x_: F.dropout(x_, 0.5, training=True), (x,))
    y = torch.randint(0, xs[1], (xs[0],), generator=gen)
    if layer == "softmax_loss":
        loss = lambda x_: F.cross_entropy(x_, y)
    else:
        loss = lambda x_: F.multi_margin_loss(x_, y, margin=1.0)
    if fwd_only:
        return no_grad(lambda: loss(x))
    return grad_of(loss, (x,))


def run_case(args, torch, name, ours):
    """Times one case on both sides: (rows, our JSON doc or None, command)."""
    doc, cmd = None, None
    if not args.ours and not args.no_interleave:
        doc, cmd = run_ours(args.bench, args.repetitions, args.min_time,
                            f"^{name}/")
        ours = dict(ours)
        ours.update(parse_ours(doc, args.stat))
        cmd[-1] = "--benchmark_filter=^<case>/"  # one run per case
    rows = []
    for dt in ("f32", "f64"):
        for direction in ("fwd", "bwd"):
            naive = ours.get((name, dt, direction, "naive"))
            fast = ours.get((name, dt, direction, "fast"))
            if fast is None:
                continue
            call = torch_call(torch, name, dt, direction)
            t_ms = time_call(call, args.repetitions, args.min_time, args.stat)
            work, unit = case_rate_work(name, dt, direction)
            rows.append({
                "case": name, "dtype": dt, "dir": direction,
                "naive_ms": naive["ms"] if naive else None,
                "fast_ms": fast["ms"], "impl": fast["label"],
                "speedup": naive["ms"] / fast["ms"] if naive else None,
                "torch_ms": t_ms, "vs_torch": t_ms / fast["ms"],
                "rate": work / fast["ms"] * 1e-6,
                "torch_rate": work / t_ms * 1e-6, "unit": unit,
            })
            print(f"  {name}/{dt}/{direction}: fast {fast['ms']:.4f} ms, "
                  f"torch {t_ms:.4f} ms", file=sys.stderr)
    return rows, doc, cmd


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
    src.add_argument("--bench", default="build/bench/catalog_bench",
                     help="catalog_bench binary to run (default %(default)s)")
    src.add_argument("--ours", help="read this catalog_bench JSON output "
                     "instead of running the binary")
    ap.add_argument("--save", help="also write our JSON output here")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3,
                    help="seconds per repetition (both sides)")
    ap.add_argument("--stat", default="median",
                    choices=["median", "mean", "min", "best"],
                    help="statistic over repetitions (min: our side needs "
                    "the binary's 'min' aggregate); best: the fastest "
                    "single call on both sides, the least disturbed by "
                    "other processes on a shared machine")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each case, wait up to SECONDS for the CPU "
                    "to be >= 90%% idle (a shared machine's other work makes "
                    "every multithreaded call wait for a core)")
    ap.add_argument("--retries", type=int, default=0,
                    help="run a case again (up to this many times) when "
                    "other processes used more than --max-interference of "
                    "the machine while it ran; the attempt with the least "
                    "interference is reported")
    ap.add_argument("--max-interference", type=float, default=0.05,
                    help="see --retries (default %(default)s)")
    ap.add_argument("--no-interleave", action="store_true",
                    help="run all of our benchmarks first, then PyTorch "
                    "(default: case by case, so both sides of a row see "
                    "the same machine load)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads (ours uses every core)")
    ap.add_argument("--filter", default="",
                    help="regex over case names, e.g. 'affine|softmax'")
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
            # Before torch loads OpenBLAS: it reads the variable once.
            os.environ["OPENBLAS_CORETYPE"] = core
            coretype_note = (f"OPENBLAS_CORETYPE={core} (set by this script, "
                             "as our library does for itself)")
    import torch  # late: --help works without torch, and after the env

    torch.set_num_threads(args.threads)
    names = [n for n in CASE_ORDER
             if not args.filter or re.search(args.filter, n)]
    cmd = None
    docs = []
    if args.ours:
        with open(args.ours) as f:
            docs.append(json.load(f))
    elif args.no_interleave:
        doc, cmd = run_ours(args.bench, args.repetitions, args.min_time,
                            f"^({'|'.join(names)})/")
        docs.append(doc)
    ours = {}
    for doc in docs:
        ours.update(parse_ours(doc, args.stat))

    rows = []
    idle_seen = []
    interference_seen = []
    for name in names:
        best_attempt = None
        for attempt in range(args.retries + 1):
            if args.wait_idle > 0:
                idle = wait_idle(args.wait_idle)
                if idle is not None:
                    idle_seen.append(idle)
                    print(f"  {name}: CPU {idle:.0%} idle", file=sys.stderr)
            with Interference() as load:
                case_rows, case_doc, case_cmd = run_case(args, torch, name,
                                                         ours)
            frac = load.fraction
            print(f"  {name}: other processes used "
                  f"{'?' if frac is None else format(frac, '.1%')} of the "
                  f"machine (attempt {attempt + 1})", file=sys.stderr)
            if best_attempt is None or (frac is not None and
                                        frac < best_attempt[0]):
                best_attempt = (frac if frac is not None else 1.0, case_rows,
                                case_doc, case_cmd)
            if frac is not None and frac <= args.max_interference:
                break
        frac, case_rows, case_doc, case_cmd = best_attempt
        interference_seen.append(frac)
        rows.extend(case_rows)
        if case_doc is not None:
            docs.append(case_doc)
        if case_cmd is not None:
            cmd = case_cmd

    if args.save and not args.ours:
        merged = dict(docs[0]) if docs else {}
        merged["benchmarks"] = [b for d in docs for b in d.get("benchmarks", [])]
        with open(args.save, "w") as f:
            json.dump(merged, f, indent=1)
    model, cores = machine()
    ctx = docs[0].get("context", {}) if docs else {}
    header = [
        f"machine: {model}, {cores} cores; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"{coretype_note}; ours: {ctx.get('layerserve_threads', '?')} threads",
        f"statistic: {args.stat} of {args.repetitions} repetitions "
        f"(>= {args.min_time} s each)"
        + ("" if args.no_interleave or args.ours
           else "; ours and torch run case by case"),
    ]
    measured = [f for f in interference_seen if f is not None]
    if measured:
        header.append(f"other processes' share of the machine while a case "
                      f"ran: at most {max(measured):.1%}"
                      + (f" (cases retried up to {args.retries} times above "
                         f"{args.max_interference:.0%})" if args.retries
                         else ""))
    if idle_seen:
        header.append(f"waited for an idle CPU before each case (up to "
                      f"{args.wait_idle:.0f} s): lowest idle seen "
                      f"{min(idle_seen):.0%}")
    if cmd:
        header.append("ours: " + " ".join(cmd))
    cols = ["case", "dtype", "dir", "naive ms", "fast ms", "fast impl",
            "fast/naive", "torch ms", "torch/fast", "fast rate",
            "torch rate", "unit"]
    table = [[
        r["case"], r["dtype"], r["dir"], fmt(r["naive_ms"], ".3f"),
        fmt(r["fast_ms"], ".3f"), r["impl"], fmt(r["speedup"], ".1f"),
        fmt(r["torch_ms"], ".3f"), fmt(r["vs_torch"], ".2f"),
        fmt(r["rate"], ".1f"), fmt(r["torch_rate"], ".1f"), r["unit"],
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
    behind = [r for r in rows if r["vs_torch"] < 1.0]
    if behind:
        print("\nnot ahead of PyTorch:", file=sys.stderr)
        for r in behind:
            print(f"  {r['case']}/{r['dtype']}/{r['dir']}: torch/fast "
                  f"{r['vs_torch']:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
