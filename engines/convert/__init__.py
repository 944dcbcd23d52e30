"""Offline weight converters (run once by maintainers; not needed at scan time)."""
