"""The benchmark: timings, FLOP rates against this machine's measured peak, memory (``benchmark``)."""
