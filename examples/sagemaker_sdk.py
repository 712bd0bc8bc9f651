"""Train, deploy and batch-transform with the image on Amazon SageMaker (SageMaker Python SDK v2).

Needs AWS credentials, an execution role, the image in ECR (see docs/local.md, "Pushing to ECR")
and ``pip install 'sagemaker>=2.200,<3'``. Nothing runs on import: the SDK is imported inside the
functions, so this module can be read, linted and imported (for its METRIC_DEFINITIONS) anywhere.

    python examples/sagemaker_sdk.py \
        --image-uri 123456789012.dkr.ecr.eu-west-1.amazonaws.com/hfsm:abc123def456 \
        --role arn:aws:iam::123456789012:role/SageMakerExecutionRole \
        --bucket my-bucket --model-s3 s3://my-bucket/models/minilm-l6/model.tar.gz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# CloudWatch metrics parsed from the job's log lines, e.g. "... hfsm.train: dev_f1=0.861234".
# dev_* lines come at every evaluation (a time series) and once more for the best model at the end.
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": name, "Regex": rf"\b{key}=([-+0-9.eE]+|nan)"}
    for name, key in (
        ("train:loss", "train_loss"),
        ("dev:loss", "dev_loss"),
        ("dev:f1", "dev_f1"),
        ("dev:precision", "dev_precision"),
        ("dev:recall", "dev_recall"),
        ("test:f1", "test_f1"),
        ("test:precision", "test_precision"),
        ("test:recall", "test_recall"),
    )
]

HYPERPARAMETERS: dict[str, Any] = {
    "task_name": "ner",
    "num_train_epochs": 3,
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 32,
    "max_seq_length": 256,
    "fp16": True,
    "eval_strategy": "epoch",
    "metric_for_best_model": "f1",
}

EXAMPLE_DATA = Path(__file__).parent / "data" / "ner"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image-uri", required=True, help="ECR image, e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/hfsm:TAG"
    )
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument("--bucket", required=True, help="S3 bucket for data, checkpoints and outputs")
    parser.add_argument("--prefix", default="hfsm-example", help="S3 key prefix")
    parser.add_argument(
        "--model-s3", help="s3:// URI of the backbone (a model.tar.gz or a prefix) for the model channel"
    )
    parser.add_argument("--train-instance", default="ml.g5.xlarge")
    parser.add_argument("--serve-instance", default="ml.g5.xlarge")
    parser.add_argument("--transform-instance", default="ml.g5.xlarge")
    return parser.parse_args(argv)


def upload_data(session: Any, bucket: str, prefix: str) -> dict[str, str]:
    """One S3 prefix per channel: the image reads train/dev/test channels (tab-separated files)."""
    return {
        split: session.upload_data(
            str(EXAMPLE_DATA / f"{split}.csv"), bucket=bucket, key_prefix=f"{prefix}/data/{split}"
        )
        for split in ("train", "dev", "test")
    }


def train(args: argparse.Namespace, session: Any, channels: dict[str, str]) -> Any:
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput

    estimator = Estimator(
        image_uri=args.image_uri,
        role=args.role,
        instance_count=1,
        instance_type=args.train_instance,
        hyperparameters=HYPERPARAMETERS,  # the SDK json-encodes the values; the image decodes them
        metric_definitions=METRIC_DEFINITIONS,
        output_path=f"s3://{args.bucket}/{args.prefix}/output",
        # SIGTERM (spot interruption, StopTrainingJob) saves a checkpoint; a re-run resumes from it
        checkpoint_s3_uri=f"s3://{args.bucket}/{args.prefix}/checkpoints",
        checkpoint_local_path="/opt/ml/checkpoints",
        use_spot_instances=True,
        max_run=4 * 3600,
        max_wait=6 * 3600,
        enable_network_isolation=True,  # the image downloads nothing: the backbone comes as a channel
        sagemaker_session=session,
    )
    inputs = {name: TrainingInput(uri) for name, uri in channels.items()}
    if args.model_s3:
        inputs["model"] = TrainingInput(args.model_s3)
    estimator.fit(inputs, wait=True, logs="All")
    return estimator


def deploy_and_predict(estimator: Any, args: argparse.Namespace) -> None:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer

    predictor = estimator.deploy(
        initial_instance_count=1,
        instance_type=args.serve_instance,
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    )
    try:
        result = predictor.predict(
            {"data": [{"text": "Empire State Building is in New York"}, {"text": "hello world"}]}
        )
        print(json.dumps(result, indent=2))
    finally:
        predictor.delete_endpoint()


def batch_transform(estimator: Any, args: argparse.Namespace, session: Any) -> str:
    """One JSON record per line in, one prediction per line out (SplitType Line, AssembleWith Line)."""
    lines = [json.dumps({"text": text}) for text in ("Empire State Building is in New York", "hello world")]
    source = Path("transform-input.jsonl")
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    input_uri = session.upload_data(
        str(source), bucket=args.bucket, key_prefix=f"{args.prefix}/transform-input"
    )
    output_uri = f"s3://{args.bucket}/{args.prefix}/transform-output"
    transformer = estimator.transformer(
        instance_count=1,
        instance_type=args.transform_instance,
        strategy="MultiRecord",  # many lines per request, up to max_payload MB
        assemble_with="Line",
        accept="application/jsonlines",
        output_path=output_uri,
        max_payload=6,
    )
    transformer.transform(input_uri, content_type="application/jsonlines", split_type="Line", wait=True)
    print(f"predictions in {output_uri}/{source.name}.out")
    return output_uri


def main(argv: list[str] | None = None) -> None:
    import sagemaker

    args = parse_args(argv)
    session = sagemaker.Session()
    channels = upload_data(session, args.bucket, args.prefix)
    estimator = train(args, session, channels)
    print(f"model artifact: {estimator.model_data}")
    deploy_and_predict(estimator, args)
    batch_transform(estimator, args, session)


if __name__ == "__main__":
    main()
