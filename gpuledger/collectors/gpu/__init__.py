"""GPU telemetry: NVML in-process (behind the one-module seam ``nvml_backend``) and
dcgm-exporter over HTTP, merged into one reading per device."""
