"""The pod-resources collector: one ``List`` (and ``GetAllocatableResources``) per
interval, bounded by the client's timeout, its answer published on a
:class:`~.types.PodResourcesBoard` the attribution reads without waiting.

A missing socket or a kubelet that does not answer is a failed run: the runtime reports
``gpuledger_collector_up{collector="podresources"} 0`` and logs one line per change of
state; the board is cleared, so attribution falls back to the other sources; the next
run that gets an answer brings it back."""

from __future__ import annotations

from pathlib import Path

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.workload.podresources.client import (
    PodResourcesClient,
    PodResourcesError,
)
from gpuledger.collectors.workload.podresources.types import (
    PodResourcesBoard,
    PodResourcesReading,
)

NAME = "podresources"


class PodResourcesCollector:
    name = NAME

    def __init__(
        self,
        socket: Path,
        *,
        timeout_s: float,
        board: PodResourcesBoard | None = None,
        allocatable: bool = True,
        keep_last_s: float = 0.0,
    ) -> None:
        self.client = PodResourcesClient(socket, timeout_s=timeout_s)
        self.board = board if board is not None else PodResourcesBoard()
        self.allocatable = allocatable
        self.keep_last_s = keep_last_s  # see PodResourcesBoard

    def collect(self) -> PodResourcesReading:
        try:
            reading = self.client.list()
            if self.allocatable:
                reading = PodResourcesReading(
                    allocations=reading.allocations,
                    allocatable=self.client.allocatable(),
                    unmapped=reading.unmapped,
                    pods=reading.pods,
                )
        except PodResourcesError as exc:
            self.board.failed(self.keep_last_s)
            raise CollectorError(str(exc)) from None
        self.board.update(reading)
        return reading

    def close(self) -> None:
        self.client.close()
