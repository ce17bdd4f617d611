"""The benchmark harness behind `make bench` (`bench/run.py`): servers, contenders, measurement, reports."""
