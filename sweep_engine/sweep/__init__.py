"""The sweep stage: run the trials of a space, record every run, and say where a sweep stands.

- driver.py: which trials are done, which may start now, what each ending means (no Ray);
- jobs.py: the vocabulary the parts share (paths, jobs, outcomes, executor and view interfaces, locks);
- record.py: a trial's MLflow run and ledger row; search.py: the Optuna search within a cell;
- faults.py: failure reasons and the fault-injection hook; progress.py: the live view; status.py: `status`;
- commands.py: the `launch`, `resume`, `status`, `ui` commands;
- ray_tune.py, ray_train.py: the only modules that import Ray (commands.py imports them inside `launch`).

Importing this package imports nothing: `validate`, `plan` and `status` must not start Ray.
"""
