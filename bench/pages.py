"""Deterministic, realistic exposition pages for the parser benchmark and tests.

* :func:`dcgm_page` -- what dcgm-exporter (3.x, default counters plus the DCP profiling
  fields) prints for a node of 8 H100 GPUs running under Kubernetes with pod attribution:
  every family with ``# HELP``/``# TYPE`` and one series per GPU carrying the labels
  ``gpu, UUID, pci_bus_id, device, modelName, Hostname, DCGM_FI_DRIVER_VERSION,
  container, namespace, pod`` in the exporter's own order.
* :func:`vllm_page` -- a vLLM (V1 engine) ``/metrics`` page as ``prometheus_client``
  renders it: ``vllm:*`` gauges, counters as ``*_total`` plus a separate ``*_created``
  gauge family, histograms with vLLM's bucket lists and their ``_created`` families,
  several ``model_name`` x ``engine`` series, and the process/GC collectors on top.
  By default it comes out at about 5,000 lines.

Values come from a seeded :class:`random.Random`, so a page is byte-for-byte the same on
every call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

__all__ = ["dcgm_page", "vllm_page"]

# --------------------------------------------------------------------------- helpers


def _go_float(value: float) -> str:
    """Format a float the way ``prometheus_client`` (and so vLLM) does."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    s = repr(float(value))
    dot = s.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _labels(pairs: list[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


# ------------------------------------------------------------------------ dcgm-exporter

# (name, type, help, kind of value) -- dcgm-exporter's default-counters.csv plus the
# DCP (profiling) fields it enables on H100s.
_DCGM_FIELDS: list[tuple[str, str, str, str]] = [
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "sm_clock"),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", "mem_clock"),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", "temp"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "temp"),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power"),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W).", "limit"),
    (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "counter",
        "Total energy consumption since boot (in mJ).",
        "energy",
    ),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.", "zero"),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "pct"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", "pct"),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %).", "zero"),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %).", "zero"),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", "zero"),
    ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "gauge", "Current clock throttle reasons.", "bits"),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", "fb_free"),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", "fb_used"),
    ("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).", "fb_res"),
    (
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "counter",
        "Total number of single-bit volatile ECC errors.",
        "zero",
    ),
    (
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "counter",
        "Total number of double-bit volatile ECC errors.",
        "zero",
    ),
    (
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "counter",
        "Total number of NVLink bandwidth counters for all lanes.",
        "zero",
    ),
    (
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
        "gauge",
        "vGPU License status",
        "zero",
    ),
    (
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for uncorrectable errors",
        "zero",
    ),
    (
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for correctable errors",
        "zero",
    ),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed", "zero"),
    (
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "gauge",
        "Ratio of time the graphics engine is active.",
        "ratio",
    ),
    (
        "DCGM_FI_PROF_SM_ACTIVE",
        "gauge",
        "The ratio of cycles an SM has at least 1 warp assigned.",
        "ratio",
    ),
    (
        "DCGM_FI_PROF_SM_OCCUPANCY",
        "gauge",
        "The ratio of number of warps resident on an SM.",
        "ratio",
    ),
    (
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "gauge",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
        "ratio",
    ),
    (
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "gauge",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
        "ratio",
    ),
    (
        "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
        "gauge",
        "Ratio of cycles the fp64 pipes are active.",
        "ratio",
    ),
    (
        "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
        "gauge",
        "Ratio of cycles the fp32 pipes are active.",
        "ratio",
    ),
    (
        "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
        "gauge",
        "Ratio of cycles the fp16 pipes are active.",
        "ratio",
    ),
    (
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "gauge",
        "The rate of data transmitted over the PCIe bus - including both protocol headers "
        "and data payloads - in bytes per second.",
        "bytes",
    ),
    (
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "gauge",
        "The rate of data received over the PCIe bus - including both protocol headers "
        "and data payloads - in bytes per second.",
        "bytes",
    ),
    (
        "DCGM_FI_PROF_NVLINK_TX_BYTES",
        "gauge",
        "The rate of data transmitted over NVLink, not including protocol headers, "
        "in bytes per second.",
        "bytes",
    ),
    (
        "DCGM_FI_PROF_NVLINK_RX_BYTES",
        "gauge",
        "The rate of data received over NVLink, not including protocol headers, "
        "in bytes per second.",
        "bytes",
    ),
]

_H100_BUS_IDS = ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]


def _dcgm_value(kind: str, rng: random.Random) -> str:
    if kind == "sm_clock":
        return str(rng.choice([1980, 1980, 1755, 345]))
    if kind == "mem_clock":
        return "2619"
    if kind == "temp":
        return str(rng.randint(31, 74))
    if kind == "power":
        return f"{rng.uniform(69.0, 700.0):.6f}"
    if kind == "limit":
        return "700.000000"
    if kind == "energy":
        return str(rng.randint(10**11, 9 * 10**12))
    if kind == "pct":
        return str(rng.randint(0, 100))
    if kind == "bits":
        return str(rng.choice([0, 1, 4, 256]))
    if kind == "fb_free":
        return str(rng.randint(1000, 81000))
    if kind == "fb_used":
        return str(rng.randint(500, 80000))
    if kind == "fb_res":
        return "559"
    if kind == "ratio":
        return f"{rng.random():.6f}"
    if kind == "bytes":
        return str(rng.randint(0, 50 * 10**9))
    return "0"


def dcgm_page(gpus: int = 8, *, seed: int = 8, hostname: str = "gpu-node-07") -> str:
    """A dcgm-exporter ``/metrics`` page for ``gpus`` H100 SXM GPUs."""
    rng = random.Random(seed)
    series: list[str] = []
    for gpu in range(gpus):
        a, b, c, d, e = (rng.getrandbits(bits) for bits in (32, 16, 16, 16, 48))
        uuid = f"GPU-{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}"
        bus = _H100_BUS_IDS[gpu % len(_H100_BUS_IDS)]
        pod = f"vllm-llama-70b-{gpu // 4}-{rng.getrandbits(24):06x}"
        series.append(
            _labels(
                [
                    ("gpu", str(gpu)),
                    ("UUID", uuid),
                    ("pci_bus_id", f"00000000:{bus}:00.0"),
                    ("device", f"nvidia{gpu}"),
                    ("modelName", "NVIDIA H100 80GB HBM3"),
                    ("Hostname", hostname),
                    ("DCGM_FI_DRIVER_VERSION", "550.90.07"),
                    ("container", "vllm"),
                    ("namespace", "inference"),
                    ("pod", pod),
                ]
            )
        )
    lines: list[str] = []
    for name, mtype, help_text, kind in _DCGM_FIELDS:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {mtype}")
        for labels in series:
            lines.append(f"{name}{{{labels}}} {_dcgm_value(kind, rng)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- vLLM

_TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
_TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]  # fmt: skip
_LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip
_ITERATION_BUCKETS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]


def _one_two_five(limit: int) -> list[float]:
    out: list[float] = []
    exp = 0
    while True:
        for m in (1, 2, 5):
            v = m * 10**exp
            if v > limit:
                return out
            out.append(float(v))
        exp += 1


_TOKEN_BUCKETS = _one_two_five(131072)

# (name, help, buckets) for every vLLM histogram.
_VLLM_HISTOGRAMS: list[tuple[str, str, list[float]]] = [
    ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
     _TTFT_BUCKETS),
    ("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.",
     _TPOT_BUCKETS),
    ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
     _TPOT_BUCKETS),
    ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
     _LATENCY_BUCKETS),
    ("vllm:request_queue_time_seconds",
     "Histogram of time spent in WAITING phase for request.", _LATENCY_BUCKETS),
    ("vllm:request_inference_time_seconds",
     "Histogram of time spent in RUNNING phase for request.", _LATENCY_BUCKETS),
    ("vllm:request_prefill_time_seconds",
     "Histogram of time spent in PREFILL phase for request.", _LATENCY_BUCKETS),
    ("vllm:request_decode_time_seconds",
     "Histogram of time spent in DECODE phase for request.", _LATENCY_BUCKETS),
    ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", _TOKEN_BUCKETS),
    ("vllm:request_generation_tokens", "Number of generation tokens processed.",
     _TOKEN_BUCKETS),
    ("vllm:request_max_num_generation_tokens",
     "Histogram of maximum number of requested generation tokens.", _TOKEN_BUCKETS),
    ("vllm:request_params_n", "Histogram of the n request parameter.",
     [1.0, 2.0, 5.0, 10.0, 20.0]),
    ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.",
     _TOKEN_BUCKETS),
    ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
     [float(b) for b in _ITERATION_BUCKETS]),
]  # fmt: skip

_VLLM_GAUGES: list[tuple[str, str]] = [
    ("vllm:num_requests_running", "Number of requests in model execution batches."),
    ("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
    ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
    ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage."),
    ("vllm:num_requests_swapped", "Number of requests swapped to CPU."),
]

_VLLM_COUNTERS: list[tuple[str, str]] = [
    ("vllm:num_preemptions", "Cumulative number of preemption from the engine."),
    ("vllm:prompt_tokens", "Number of prefill tokens processed."),
    ("vllm:generation_tokens", "Number of generation tokens processed."),
    ("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."),
    ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."),
    ("vllm:gpu_prefix_cache_queries", "GPU prefix cache queries, in terms of number of "
     "queried tokens."),
    ("vllm:gpu_prefix_cache_hits", "GPU prefix cache hits, in terms of number of cached "
     "tokens."),
]  # fmt: skip

_VLLM_MODELS = [
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct",
    "Qwen/Qwen2.5-32B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "google/gemma-2-27b-it",
]

_PROCESS_PREAMBLE = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 18234.0
python_gc_objects_collected_total{generation="1"} 4512.0
python_gc_objects_collected_total{generation="2"} 1019.0
# HELP python_gc_objects_uncollectable_total Uncollectable objects found during GC
# TYPE python_gc_objects_uncollectable_total counter
python_gc_objects_uncollectable_total{generation="0"} 0.0
python_gc_objects_uncollectable_total{generation="1"} 0.0
python_gc_objects_uncollectable_total{generation="2"} 0.0
# HELP python_gc_collections_total Number of times this generation was collected
# TYPE python_gc_collections_total counter
python_gc_collections_total{generation="0"} 2711.0
python_gc_collections_total{generation="1"} 246.0
python_gc_collections_total{generation="2"} 14.0
# HELP python_info Python platform information
# TYPE python_info gauge
python_info{implementation="CPython",major="3",minor="12",patchlevel="9",version="3.12.9"} 1.0
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 5.4211985408e+10
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 3.517440e+09
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.73211654521e+09
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 9731.52
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 187.0
# HELP process_max_fds Maximum number of open file descriptors.
# TYPE process_max_fds gauge
process_max_fds 1.048576e+06
"""


def vllm_info_and_gauges(
    out: list[str], series: Sequence[str], value: Callable[[str, int], float]
) -> None:
    """``vllm:cache_config_info`` (an Info metric rendered as a gauge) and the gauge
    families, one sample per series; ``value(name, i)`` gives series ``i``'s value."""
    out.append("# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig")
    out.append("# TYPE vllm:cache_config_info gauge")
    for labels in series:
        engine, model = labels.split(",", 1)
        out.append(
            f'vllm:cache_config_info{{block_size="16",cache_dtype="auto",{engine},'
            f'gpu_memory_utilization="0.9",{model},num_gpu_blocks="27306",'
            f'prefix_caching_hash_algo="builtin",swap_space="4"}} 1.0'
        )
    for name, help_text in _VLLM_GAUGES:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        for i, labels in enumerate(series):
            out.append(f"{name}{{{labels}}} {_go_float(value(name, i))}")


def vllm_page(models: int = 5, engines: int = 3, *, seed: int = 5000) -> str:
    """A vLLM ``/metrics`` page; the defaults give about 5,000 lines."""
    rng = random.Random(seed)
    created = 1_732_116_545.0
    series = [
        _labels([("engine", str(e)), ("model_name", _VLLM_MODELS[m % len(_VLLM_MODELS)])])
        for m in range(models)
        for e in range(engines)
    ]
    out: list[str] = [_PROCESS_PREAMBLE.rstrip("\n")]

    def created_family(name: str, help_text: str) -> None:
        out.append(f"# HELP {name}_created {help_text}")
        out.append(f"# TYPE {name}_created gauge")
        for labels in series:
            out.append(f"{name}_created{{{labels}}} {_go_float(created + rng.random())}")

    vllm_info_and_gauges(out, series, lambda _name, _i: float(rng.randint(0, 64)))
    for name, help_text in _VLLM_COUNTERS:
        out.append(f"# HELP {name}_total {help_text}")
        out.append(f"# TYPE {name}_total counter")
        for labels in series:
            out.append(f"{name}_total{{{labels}}} {_go_float(float(rng.randint(0, 10**9)))}")
        created_family(name, help_text)
    out.append("# HELP vllm:request_success_total Count of successfully processed requests.")
    out.append("# TYPE vllm:request_success_total counter")
    for labels in series:
        for reason in ("abort", "length", "stop"):
            value = _go_float(float(rng.randint(0, 10**6)))
            out.append(f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {value}')
    out.append("# HELP vllm:request_success_created Count of successfully processed requests.")
    out.append("# TYPE vllm:request_success_created gauge")
    for labels in series:
        for reason in ("abort", "length", "stop"):
            value = _go_float(created + rng.random())
            out.append(
                f'vllm:request_success_created{{{labels},finished_reason="{reason}"}} {value}'
            )
    for name, help_text, buckets in _VLLM_HISTOGRAMS:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} histogram")
        for labels in series:
            count = 0
            total = 0.0
            for le in [*buckets, math.inf]:
                if le != math.inf:
                    step = rng.randint(0, 5000)
                    count += step
                    total += step * le * rng.uniform(0.4, 1.0)
                out.append(f'{name}_bucket{{{labels},le="{_go_float(le)}"}} {_go_float(count)}')
            out.append(f"{name}_count{{{labels}}} {_go_float(count)}")
            out.append(f"{name}_sum{{{labels}}} {_go_float(total)}")
        created_family(name, help_text)
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - a quick look at the pages
    for page in (dcgm_page(), vllm_page()):
        print(page.count("\n"), "lines,", len(page.encode()), "bytes")
