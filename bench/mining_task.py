"""Mining (ALDD) task throughput end to end (see bench/predict_task.py)."""

from predict_task import main

if __name__ == "__main__":
    main("mining")
