"""The README is a front page: at most 10,000 bytes (tables and dated measurements live in docs/ and CHANGELOG.md)."""
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_is_a_front_page():
    size = len(README.read_bytes())
    assert size <= 10_000, f"README.md is {size} bytes: move detail to docs/results.md, benchmarks/README.md or CHANGELOG.md"
