"""Who holds each GPU: evidence from the workload inputs (cgroups, pods, static maps,
dcgm-exporter's pod labels) → claims per device → shares of each physical GPU that sum to
one, with ``__idle__`` as the remainder."""
