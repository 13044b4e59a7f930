"""Combining predictions and exporting them: view and fold means, the validator, leaderboard writers and the zip."""
