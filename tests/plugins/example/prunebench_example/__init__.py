"""Example PruneBench plugin: one method, registered through an entry point."""
