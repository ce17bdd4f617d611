"""Bench-only experiment (`bench/run.py --patch isal`): apilake's streaming gzip check inflating
with python-isal (ISA-L) instead of stdlib zlib, without touching src/.

Python imports `sitecustomize` at start-up from PYTHONPATH; the harness puts this folder there
for the patched contender only. `isal_zlib` mirrors zlib's `decompressobj` API (eof, unused_data,
unconsumed_tail, error), so swapping the module `apilake.integrity` uses is the whole change.
"""

try:
    from isal import isal_zlib
except ImportError:  # not installed: the contender runs unpatched, and says so on stderr
    import sys

    print("bench patch isal: python-isal is not installed; running unpatched", file=sys.stderr)
else:
    import apilake.integrity

    apilake.integrity.zlib = isal_zlib  # type: ignore[assignment]
