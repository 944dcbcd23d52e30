"""Live stream scanning: sources with reconnects, cross-stream batching, rolling
verdicts, sinks and the ``dfscan serve`` HTTP API (see :mod:`.service`)."""
