"""Container entrypoint: ``/usr/bin/start.sh`` runs ``python3 /app/start.py``.

Local runs: ``python start.py --in DIR --out DIR`` maps the platform's /in and /out.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # no __pycache__ beside the sources: nothing is written outside /out and the temp dir

from executor.app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
