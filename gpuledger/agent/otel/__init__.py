"""Optional OpenTelemetry export (the ``otel`` extra): the samples ``/metrics`` serves, pushed
over OTLP/HTTP, and a span per probe. Imported only when ``otel.enabled``."""
