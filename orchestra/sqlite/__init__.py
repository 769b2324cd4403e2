"""The embedded default's database backend: SQLite with its writers queued in process
(see base.py)."""
