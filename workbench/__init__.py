"""The spine of the workbench: configuration, command line, metrics, losses, heads, folds and the fold trainer."""
