"""Where the tests find the repository and their recorded upstream fixtures, wherever
the test module sits in the tree."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "support" / "fixtures"
