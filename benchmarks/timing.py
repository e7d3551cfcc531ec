"""Shared timing helper of the benchmark scripts."""

import argparse
import statistics
import time

import torch


def _seconds(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_seconds(fn, repeats: int, warmup: bool = True) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (CUDA synchronised), after one warm-up call."""
    if warmup:
        fn()
    return statistics.median(_seconds(fn) for _ in range(repeats))


def interleaved_median_seconds(fns: dict, repeats: int) -> dict:
    """Median wall time of each function, timed in turn (a, b, c, a, b, c, ...) after one warm-up call each, so that
    slow drifts of a shared machine hit every contender alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_seconds(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_bytes(fn) -> int:
    """Peak memory of the tensors ``fn()`` allocates, above what was live before it: CUDA's allocator counter on GPU;
    on CPU the running sum, in time order, of every allocation and free the profiler records (profile_memory)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage  # an op's own allocations; "[memory]" events carry frees between ops
        peak = max(peak, live)
    return peak


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for every benchmark JSON: machines differ between sessions."""
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line(script: str, args: argparse.Namespace, leave_out: tuple[str, ...] = ("out",)) -> str:
    """The command that reproduces a run: ``python benchmarks/SCRIPT --option value ...`` with every parsed option
    (lists space-separated) except ``leave_out``."""
    options = (
        f"--{name.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        for name, value in vars(args).items()
        if name not in leave_out
    )
    return f"python benchmarks/{script} " + " ".join(options)


def run_record(script: str, args: argparse.Namespace, device: torch.device) -> dict:
    """What a model benchmark's JSON opens with: the reproducing command, the device (a GPU's name, else "cpu"),
    the CPU model, threads, torch version, and the model's width and depth (``args.hidden_size``, ``args.layers``)."""
    return {
        "command": command_line(script, args),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": cpu_model(),
        "threads": args.threads,
        "torch": torch.__version__,
        "hidden_size": args.hidden_size,
        "layers": args.layers,
    }
