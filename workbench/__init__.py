"""The spine: configuration, the commands and what they print, training (the fold machinery and the frozen and
fine-tuned recipes), sweeps, submission and the exported predictor."""
