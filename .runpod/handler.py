"""RunPod Hub entry point. The worker lives in runpod_worker/handler.py; this file only starts it.

The Hub looks for handler.py, Dockerfile and README.md in .runpod/ or at the repository root.
The image (.runpod/Dockerfile, the worker's one image) runs the worker directly.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runpod_worker.handler import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    main()
