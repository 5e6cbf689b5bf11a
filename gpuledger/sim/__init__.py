"""A GPU node without GPUs: a fake NVML with the library's behaviour and error classes, a
seeded simulated node and month, and the demo. Imported only by the agent's wiring, the
CLI and tests."""
