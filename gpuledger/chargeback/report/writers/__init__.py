"""The report's formats, one module each: CSV and JSON (and the dispatcher that writes
every format of a month atomically), FOCUS 1.2, HTML with charts."""
