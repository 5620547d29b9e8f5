"""The ``contextos`` command line: a thin translation of the Python API."""
