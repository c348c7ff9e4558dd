#!/usr/bin/python3
"""Asks the server one question about an image and streams the answer.

    PYTHONPATH=build/python:client/python client/python/example.py \
        --server 127.0.0.1:50051 --image photo.jpg --prompt "What is unusual about this image?"
"""

import argparse
import sys

from iblip_client import Client


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--image", required=True)
    parser.add_argument("--prompt", default="")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    with open(args.image, "rb") as f:
        image = f.read()
    with Client(args.server) as client:
        for chunk in client.generate(image, args.prompt, max_new_tokens=args.max_new_tokens):
            if chunk.HasField("usage"):
                u = chunk.usage
                print(f"\n[{u.generated_tokens} tokens, first after "
                      f"{u.time_to_first_token_us / 1000:.0f} ms]", file=sys.stderr)
            else:
                print(chunk.text, end="", flush=True)


if __name__ == "__main__":
    main()
