"""Where tests find the repository and the official test vectors stored inside it."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Outputs of the official implementations (see its README.md); part of the repository, so a
#: clone runs every parity test with nothing beside it.
OFFICIAL = REPO / 'tests' / 'data' / 'official'
