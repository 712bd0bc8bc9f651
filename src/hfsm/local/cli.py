"""``hfsm local ...``: train, serve and batch-transform on this machine exactly as SageMaker would.

Each sub-command sets ``handler``; ``hfsm.__main__`` calls it and turns a :class:`UserError` into exit 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from ..errors import UserError

DEFAULT_WORK = Path("runs/local-train")


def add_local_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="local_command", required=True)

    train = commands.add_parser(
        "train",
        help="lay out a SageMaker tree and run train on it",
        description="Lay out a SageMaker tree in --work from --data and the "
        "hyperparameters, run train on it (in a process or --image) and print where "
        "the model and metrics are.",
    )
    train.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with train.csv/dev.csv/test.csv, or with train/ dev/ test/ folders",
    )
    train.add_argument(
        "--hyperparameters",
        nargs="+",
        default=[],
        metavar="FILE_OR_K=V",
        help="JSON files and/or key=value pairs (values parsed as JSON when they are JSON)",
    )
    train.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        help=f"folder for the SageMaker tree (default {DEFAULT_WORK}); its input/, model/, "
        "output/ and checkpoints/ are replaced",
    )
    train.add_argument(
        "--model", type=Path, help="model folder (or model.tar.gz) given as the 'model' channel"
    )
    train.add_argument("--image", help="run train in this image (podman/docker; $HFSM_CONTAINER_ENGINE)")
    train.set_defaults(handler=_train)

    serve = commands.add_parser("serve", help="serve a model folder on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--model", type=Path, required=True, help="the model folder that train wrote")
    serve.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    serve.add_argument("--image", help="serve with this image instead of a local process")
    serve.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for /ping")
    serve.set_defaults(handler=_serve)

    transform = commands.add_parser(
        "transform", help="run a Batch Transform (SplitType=Line, AssembleWith=Line)"
    )
    transform.add_argument("--input", type=Path, required=True, help="an input file or a folder of them")
    transform.add_argument("--output", type=Path, required=True, help="folder for NAME.out files")
    transform.add_argument("--content-type", default="application/jsonlines", help="request Content-Type")
    transform.add_argument("--accept", help="response format (default: the content type)")
    target = transform.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", help="URL of a running server, e.g. http://127.0.0.1:8080")
    target.add_argument(
        "--model", type=Path, help="start a local server for this model folder, stop it after"
    )
    transform.add_argument("--image", help="with --model: serve with this image")
    transform.add_argument(
        "--max-concurrent-transforms", type=int, help="override the container's MaxConcurrentTransforms"
    )
    transform.add_argument(
        "--batch-strategy",
        choices=["MULTI_RECORD", "SINGLE_RECORD"],
        help="override the container's BatchStrategy",
    )
    transform.add_argument(
        "--max-payload-mb", type=int, help="override the container's MaxPayloadInMB (0: none)"
    )
    transform.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    transform.set_defaults(handler=_transform)

    convert = commands.add_parser(
        "convert",
        help="convert NER data (CoNLL, NeMo, JSON lines) to the tab-separated files train reads",
        description="Read NER data in any input format with the checks of a training job and write "
        "OUTPUT/train.tsv, dev.tsv and test.tsv (columns text, labels), ready for 'local train --data "
        "OUTPUT' or an S3 channel. IOB1 CoNLL comes out IOB2; orphan I- tags are reported (and rewritten "
        "to B- with --repair-iob).",
    )
    convert.add_argument(
        "--input",
        type=Path,
        required=True,
        help="a file (dev.* is dev, test.* test, any other name train), a folder of files named by split, "
        "or a folder with train/ dev/ test/ folders",
    )
    convert.add_argument("--output", type=Path, required=True, help="folder for train.tsv, dev.tsv, test.tsv")
    convert.add_argument(
        "--format",
        default="auto",
        choices=["auto", "conll", "nemo", "jsonl", "tsv"],
        help="input format (default: by extension, as the input_format hyperparameter)",
    )
    convert.add_argument("--tokens-field", default="tokens", help="JSON lines: field of the token list")
    convert.add_argument("--tags-field", default="tags", help="JSON lines: field of the tag list")
    convert.add_argument(
        "--bbox-field", help="JSON lines field (or TSV column) of word boxes, written as a bbox column"
    )
    convert.add_argument(
        "--repair-iob", action="store_true", help="rewrite orphan I-X tags to B-X (as repair_iob=true)"
    )
    convert.set_defaults(handler=_convert)

    export = commands.add_parser(
        "export-onnx",
        help="export a model folder to ONNX (MODEL/onnx) for the ONNX Runtime engine of serve",
        description="Write MODEL/onnx: the model as an ONNX graph (float32, and int8 unless --no-int8) and "
        "its tokenizer, each checked against torch and transformers on probe texts before anything is "
        "written. serve then answers from it with ONNX Runtime (HFSM_RUNTIME=auto or onnxruntime), without "
        "importing torch: the same as train's export_onnx=true, for folders trained without it.",
    )
    export.add_argument("--model", type=Path, required=True, help="a model folder written by train")
    export.add_argument("--no-int8", action="store_true", help="skip the int8 graph (HFSM_QUANTIZE=int8)")
    export.add_argument(
        "--trust-remote-code", action="store_true", help="load a model whose architecture is custom code"
    )
    export.set_defaults(handler=_export_onnx)


def _export_onnx(args: argparse.Namespace) -> None:
    from ..inference.onnx_export import export_onnx
    from ..logs import route_transformers_logs

    route_transformers_logs()
    report = export_onnx(args.model, int8=not args.no_int8, trust_remote_code=args.trust_remote_code)
    print(f"ONNX export in {report.folder} ({report.seconds:.1f}s)", flush=True)


def _train(args: argparse.Namespace) -> None:
    from .train import local_train
    from .tree import parse_hyperparameter_args

    local_train(args.work, args.data, parse_hyperparameter_args(args.hyperparameters), args.model, args.image)


def _convert(args: argparse.Namespace) -> None:
    from .convert import convert

    converted = convert(
        args.input,
        args.output,
        args.format,
        tokens_field=args.tokens_field,
        tags_field=args.tags_field,
        bbox_field=args.bbox_field,
        repair_iob=args.repair_iob,
    )
    for split in converted:
        for line in split.summary():
            print(line, flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> None:
    """Serve in the foreground; Ctrl-C or SIGTERM stops the server with SIGTERM (never orphaned)."""
    from .server import start_server

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    server = follower = None
    try:
        server = start_server(args.model, args.port, args.image, quiet=False)
        follower = server.follow_logs()
        server.wait_ready(args.ready_timeout)
        print(
            f"serving {args.model} on {server.url} (Ctrl-C to stop)\n"
            f"  curl -s {server.url}/invocations -H 'Content-Type: application/json' "
            """-d '{"data": [{"text": "Empire State Building is in New York"}]}'""",
            flush=True,
        )
        while not server.exited():
            time.sleep(1)
        raise UserError(f"the model server stopped by itself:\n{server.logs()[-4000:]}")
    except KeyboardInterrupt:
        print("stopping the server (SIGTERM)", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.stop()
        if follower is not None:
            follower.terminate()
            follower.wait()
        signal.signal(signal.SIGTERM, previous)


def _transform(args: argparse.Namespace) -> None:
    from .server import running_server

    if args.image and not args.model:
        raise UserError("--image needs --model (with --endpoint the server is already running)")
    if args.model:
        with running_server(args.model, image=args.image) as server:
            _run_transform(args, server.url)
    else:
        _run_transform(args, args.endpoint.rstrip("/"))


def _run_transform(args: argparse.Namespace, endpoint: str) -> None:
    from .transform import Invoker, fetch_execution_parameters, transform, with_overrides

    params = with_overrides(
        fetch_execution_parameters(endpoint),
        args.max_concurrent_transforms,
        args.batch_strategy,
        args.max_payload_mb,
    )
    print(
        f"execution parameters: MaxConcurrentTransforms={params.max_concurrent_transforms} "
        f"BatchStrategy={params.batch_strategy} MaxPayloadInMB={params.max_payload_mb}",
        flush=True,
    )
    invoke = Invoker(endpoint, args.content_type, args.accept or args.content_type, timeout_s=args.timeout)
    result = transform(args.input, args.output, invoke, params)
    print(f"{result.records} records in {result.requests} requests, {result.seconds:.1f}s", flush=True)
    for path in result.outputs:
        print(f"output: {path}", flush=True)
