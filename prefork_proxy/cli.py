"""Command line entry point (placeholder until the foundation lands)."""


def main() -> int:
    return 0
