"""What this machine trains on, and how `--workers auto` shares it among trial processes.

The rule of `auto` (docs/distributed.md):
- with GPUs: one worker per GPU (each sees only its own through CUDA_VISIBLE_DEVICES), the
  CPU cores shared equally among them for input work;
- on CPUs only: one single-threaded worker per core, because small Keras models use a
  second intra-op thread poorly (measured here: two one-thread workers did 1.92x the
  images/s of one two-thread worker on the tutorial CNNs), so separate trials use the cores
  better; but one worker with every thread when the sweep searches a family whose trials
  keep all cores busy on their own (`USES_ALL_CORES`: the ResNet at batch 256 measured
  0.99x with two one-thread workers, and they reach a first good trial later);
- never more workers than the sweep has trials, nor than memory holds: each worker keeps its
  own copy of the data plus TensorFlow's working memory (2 GiB allowed per worker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# CPU flags of native bfloat16 arithmetic. Without them TensorFlow emulates bf16: measured on
# an AVX2-only AMD EPYC, the ResNet trained at 10 images/s in mixed_bfloat16 against 77 in
# float32, where an AVX-512 BF16 CPU had measured 1.5-1.7x the other way.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
WORKER_VARIABLE = "SWEEPER_WORKER"  # set by the supervisor: its worker's number, from 1
WORKER_MEMORY = 2 * 2**30  # TensorFlow, a mid-sized model and its batches, per worker


@dataclass(frozen=True)
class Plan:
    """How many trial processes, the CPU threads of each, and the GPU of each (if any)."""

    workers: int
    threads: int
    gpus: tuple[str, ...] = ()  # CUDA_VISIBLE_DEVICES value of each worker, in order
    why: str = ""

    def environment(self, worker: int) -> dict[str, str]:
        """The environment variables that give worker `worker` its device."""
        return {"CUDA_VISIBLE_DEVICES": self.gpus[worker]} if self.gpus else {}


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory(meminfo: str = "/proc/meminfo") -> int:
    """Memory that new processes can have: Linux's MemAvailable, which counts the page cache
    the kernel gives back (free pages alone leave out a machine's file cache)."""
    try:
        with open(meminfo) as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not on this platform: do not let memory decide
        return 2**62


def gpus() -> list[str]:
    """The GPUs TensorFlow sees, by the index CUDA_VISIBLE_DEVICES takes."""
    import tensorflow as tf

    return [str(i) for i, _ in enumerate(tf.config.list_physical_devices("GPU"))]


def plan(
    requested: int | None,
    *,
    trials: int,
    data_bytes: int,
    gpu_ids: list[str],
    n_cores: int,
    memory: int,
    all_cores_per_trial: bool = False,
) -> Plan:
    """`requested` workers (None: `auto`, by the rule in this module's docstring)."""
    if requested is not None:
        workers = requested
        why = "as asked"
    elif gpu_ids:
        workers, why = min(len(gpu_ids), trials), f"one per GPU ({len(gpu_ids)})"
    elif all_cores_per_trial:
        workers, why = 1, "its families' trials use every core on their own"
    else:
        workers, why = min(n_cores, trials), f"one per CPU core ({n_cores})"
        by_memory = max(1, memory // (WORKER_MEMORY + 2 * data_bytes))
        if by_memory < workers:
            workers, why = by_memory, f"as many as {memory / 2**30:.1f} GiB of free memory holds"
        if trials < n_cores and workers == trials:
            why = f"one per trial ({trials}), fewer than the cores"
    threads = max(1, n_cores // workers)
    assigned = tuple(gpu_ids[i % len(gpu_ids)] for i in range(workers)) if gpu_ids else ()
    return Plan(workers, threads, assigned, why)


def precision(requested: str, cpu_flags: set[str] | None = None) -> str:
    """The Keras dtype policy for `requested`; `auto`: mixed_bfloat16 where the hardware
    computes in bf16 natively (GPUs of compute capability 8 and later, CPUs with
    `BF16_CPU_FLAGS`), float32 elsewhere."""
    if requested != "auto":
        return requested
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return "mixed_bfloat16" if capability and capability[0] >= 8 else "float32"
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    return "mixed_bfloat16" if flags & set(BF16_CPU_FLAGS) else "float32"


def _cpu_flags() -> set[str]:
    """The CPU's feature flags, from Linux's /proc/cpuinfo (none elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def setup(threads: int | None) -> None:
    """Caps TensorFlow's CPU threads (None: all) and lets each GPU's memory grow as needed
    (so a worker does not take the whole card). Call before the first operation."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def describe() -> list[str]:
    """What TensorFlow sees, one device a line."""
    import tensorflow as tf

    lines = [f"CPU: {cores()} core(s) usable, {available_memory() / 2**30:.1f} GiB free memory"]
    for i, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(gpu)
        name = details.get("device_name", gpu.name)
        capability = details.get("compute_capability")
        lines.append(
            f"GPU {i}: {name}"
            + (f" (compute capability {capability[0]}.{capability[1]})" if capability else "")
        )
    if len(lines) == 1:
        lines.append("GPU: none visible to TensorFlow (CPU training; see docs/distributed.md)")
    lines.append(f"precision auto: {precision('auto')}")
    return lines
