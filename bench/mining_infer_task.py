"""Mining + infer in one task vs the two tasks apart, through start.py (see bench/predict_task.py).

    python bench/mining_infer_task.py [--candidates 160] [--algorithm aldd] [--repeats 2]

Prints one JSON object: each task's wall and batch-loop seconds (best of --repeats) and the
ratio combined / (mining alone + infer alone).
"""

import argparse
import json

from predict_task import measure_combined

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=160)
    parser.add_argument("--input-size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--algorithm", default="aldd")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(
        json.dumps(
            measure_combined(args.candidates, args.input_size, args.batch, args.workers, args.algorithm, args.repeats),
            indent=1,
        )
    )
