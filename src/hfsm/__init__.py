"""Fine-tune and serve Hugging Face token and sequence classifiers in one SageMaker container."""

__version__ = "0.1.0"
