"""apilake: land raw API responses and bulk files in a data lake, exactly once.

The flow, one module each: job file (`jobfile`) → plan (`plan`, pure) → fetch (`fetch`) →
land (`destinations`) → record (`record`); `runner` drives it and `cli` is the command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
