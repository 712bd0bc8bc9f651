"""The local SageMaker harness: lay out a SageMaker tree, train, serve and batch-transform without AWS."""
