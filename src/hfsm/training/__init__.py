"""The training job: data to features, Trainer setup, metrics, checkpoints and artifacts."""
