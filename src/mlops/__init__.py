"""MLOps template: train, evaluate, report, deploy and serve a text classifier."""
