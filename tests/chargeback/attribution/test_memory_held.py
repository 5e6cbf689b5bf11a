"""Issue 17: the GPU memory each owner holds (``OwnerShare.memory_bytes``, the ledger's
peak memory), per sharing case: a whole GPU, a time-sliced GPU, MIG instances, the idle
remainder (MPS, through the real NVML path, is in ``test_mps.py``). Expected bytes are the
readings' own figures, stated here."""

from __future__ import annotations

from collections.abc import Sequence

from gpuledger.chargeback.attribution.claims import IDLE, Claim, Owner
from gpuledger.chargeback.attribution.shares import GpuAllocation, allocate
from gpuledger.collectors.gpu.readings import GpuReading

H100 = "NVIDIA H100 80GB HBM3"
GIB = 1024**3
A = Owner("llm", "chat", "chat-0", "vllm")
B = Owner("search", "embed", "embed-0", "server")


def memory_of(alloc: GpuAllocation) -> dict[str, float | None]:
    return {s.owner.service: s.memory_bytes for s in alloc.shares}


def claims_table(table: dict[tuple[str, int | None], Sequence[Claim]]):  # type: ignore[no-untyped-def]
    return lambda d: table.get(d.key, ())


def test_whole_gpu_one_owner_its_processes_memory_else_the_devices() -> None:
    g = GpuReading(uuid="GPU-0", index=0, model=H100, memory_used_bytes=75 * GIB)
    # its processes' memory (the claim's), not the device's (which counts the driver too)
    (a,) = allocate([g], lambda d: [Claim(A, 0.4, 70 * GIB)])
    assert memory_of(a) == {"chat": 70 * GIB}
    # two processes of one pod: one claim, their memory summed
    (a,) = allocate([g], lambda d: [Claim(A, 0.1, 30 * GIB), Claim(A, 0.2, 40 * GIB)])
    assert memory_of(a) == {"chat": 70 * GIB}
    # held with no process memory (the kubelet gave it the GPU; NVML hid the memory):
    # the owner holds the whole device, so the device's used memory is its
    (a,) = allocate([g], lambda d: [Claim(A)])
    assert memory_of(a) == {"chat": 75 * GIB}
    # and when the device reports none either: not measured, not 0
    bare = GpuReading(uuid="GPU-0", index=0, model=H100)
    (a,) = allocate([bare], lambda d: [Claim(A)])
    assert memory_of(a) == {"chat": None}


def test_time_sliced_gpu_each_owner_its_own_processes_memory() -> None:
    g = GpuReading(uuid="GPU-0", index=0, model=H100, memory_used_bytes=60 * GIB)
    (a,) = allocate([g], lambda d: [Claim(A, 0.3, 34 * GIB), Claim(B, 0.1, 20 * GIB)])
    assert memory_of(a) == {"chat": 34 * GIB, "embed": 20 * GIB}
    # an owner whose processes report no memory: not measured (never the device's, which
    # the others share)
    (a,) = allocate([g], lambda d: [Claim(A, 0.3, 34 * GIB), Claim(B, 0.1, None)])
    assert memory_of(a) == {"chat": 34 * GIB, "embed": None}
    # the same under every split policy: memory is what each holds, not its share
    (a,) = allocate([g], lambda d: [Claim(A, 0.3, 34 * GIB), Claim(B, 0.1, 20 * GIB)], "equal")
    assert memory_of(a) == {"chat": 34 * GIB, "embed": 20 * GIB}


def test_mig_instances_their_processes_memory_else_the_instances() -> None:
    board = GpuReading(uuid="GPU-7", index=7, model=H100, mig_enabled=True, mig_total_slices=7,
                       memory_used_bytes=50 * GIB)  # fmt: skip
    i1 = GpuReading(uuid="GPU-7", index=7, model=H100, mig_instance=1, mig_profile="3g.40gb",
                    mig_slices=3, mig_total_slices=7, memory_used_bytes=38 * GIB)  # fmt: skip
    i5 = GpuReading(uuid="GPU-7", index=7, model=H100, mig_instance=5, mig_profile="1g.10gb",
                    mig_slices=1, mig_total_slices=7, memory_used_bytes=9 * GIB)  # fmt: skip
    i9 = GpuReading(uuid="GPU-7", index=7, model=H100, mig_instance=9, mig_profile="1g.10gb",
                    mig_slices=1, mig_total_slices=7, memory_used_bytes=0)  # fmt: skip
    table = {
        ("GPU-7", 1): [Claim(A, None, 36 * GIB)],  # its process's memory
        ("GPU-7", 5): [Claim(B)],  # no process memory (NVML on MIG): the instance's
    }
    (a,) = allocate([board, i1, i5, i9], claims_table(table))
    assert memory_of(a) == {"chat": 36 * GIB, "embed": 9 * GIB, IDLE: None}
    # never the board's memory: that is every instance's together
    assert 50 * GIB not in memory_of(a).values()


def test_the_idle_remainder_holds_no_memory() -> None:
    g = GpuReading(uuid="GPU-0", index=0, model=H100, memory_used_bytes=1 * GIB)
    (a,) = allocate([g], lambda d: [])
    assert memory_of(a) == {IDLE: None}
