"""dfscan scanner: the streaming pipeline and the command line (imports engines)."""
__version__ = "0.1.0"
