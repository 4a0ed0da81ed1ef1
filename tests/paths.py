"""Where tests find the repository and the shared official test vectors."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('MMB_SHARED', REPO.parent / 'shared'))
OFFICIAL = SHARED / 'testdata' / 'official'
