"""Imports a package that is not installed, as a plugin with a missing dependency would."""
import prunebench_missing_dependency  # noqa: F401
