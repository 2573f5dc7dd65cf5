"""The ``texture-nets`` command-line application (CLI, image I/O, atomic output files)."""
