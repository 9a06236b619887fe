"""The training stage: one trial's run, a plain function with no Ray and no MLflow.

- loop.py: `run_trial`, the loop that reads top to bottom; step.py: one optimizer step and batch geometry;
- model.py: GPT-2 shapes built and loaded; schedule.py: the learning rate as a function of the step;
- evaluate.py: validation loss over a whole fixed set; stopping.py: the early-stopping rule;
- checkpoint.py: what a trial leaves in its workdir (best/, state.pt, result.json).

Importing this package imports nothing (torch loads with the modules above).
"""
