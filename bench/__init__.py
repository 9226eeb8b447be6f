"""Side-by-side benchmarks: prefork-proxy against nginx and Python peers (`python -m bench`)."""
