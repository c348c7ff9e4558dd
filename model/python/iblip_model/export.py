"""model/export: Hugging Face InstructBLIP checkpoint -> model package."""

import argparse
import json
import os
import sys


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="model/export",
        description="Turns a Hugging Face InstructBLIP checkpoint into a model package.")
    parser.add_argument("--checkpoint", required=True,
                        help="Hugging Face model directory (config.json, weights, tokenizers)")
    parser.add_argument("--output", required=True, help="package directory to write")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="weight dtype of the exported modules (default fp32)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config_path = os.path.join(args.checkpoint, "config.json")
    if not os.path.isfile(config_path):
        print(f"model/export: {config_path} not found: not a Hugging Face checkpoint directory",
              file=sys.stderr)
        return 2
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    print(f"model/export: {config.get('architectures', ['?'])[0]} checkpoints are not "
          "convertible by this version yet", file=sys.stderr)
    return 3
