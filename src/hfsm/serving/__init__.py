"""SageMaker's inference HTTP contract: settings from the environment, the Flask app, gunicorn."""
