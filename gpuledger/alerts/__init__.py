"""Prometheus alert and recording rules as code (a later issue)."""
