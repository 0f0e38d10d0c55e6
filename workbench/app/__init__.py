"""The applications, the only layer that wires the others together: the command line (``cli``
and its handlers), the Python API (``api``), the demo, the dashboard's logic, benchmarks and
reports."""
