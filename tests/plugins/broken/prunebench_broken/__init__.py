"""A plugin that cannot be imported here."""
