"""The iblip-client command line against a running server."""

import json

from server_harness import run_client

JSON_KEYS = {"token_ids", "text", "finish_reason", "usage", "request_id"}
USAGE_KEYS = {"prompt_tokens", "image_tokens", "generated_tokens", "queue_time_us",
              "time_to_first_token_us", "total_time_us", "seed"}


def test_generate_json_prints_one_object(server, image_path):
    result = run_client("generate", "--server", server.address, "--image", image_path,
                        "--prompt", "What color is the shape?", "--max-new-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    answer = json.loads(lines[0])
    assert set(answer) == JSON_KEYS
    assert set(answer["usage"]) == USAGE_KEYS
    assert 1 <= len(answer["token_ids"]) <= 8
    assert answer["usage"]["generated_tokens"] == len(answer["token_ids"])
    assert answer["finish_reason"] in ("stop", "length")
    if answer["finish_reason"] == "stop":
        assert answer["token_ids"][-1] in (1, 2)  # EOS included, as Hugging Face returns it


def test_generate_streams_text_and_matches_json(server, image_path):
    common = ["--server", server.address, "--image", image_path, "--prompt", "Describe.",
              "--max-new-tokens", "10", "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9",
              "--seed", "7"]
    # Bytes: the random model's text may hold "\r", which text mode would rewrite.
    streamed = run_client("generate", *common, binary=True)
    as_json = run_client("generate", *common, "--json")
    assert streamed.returncode == 0 and as_json.returncode == 0, streamed.stderr + as_json.stderr.encode()
    assert streamed.stdout[:-1].decode() == json.loads(as_json.stdout)["text"]
    assert streamed.stdout.endswith(b"\n")
    assert b"tokens" in streamed.stderr  # the stats line


def test_generate_error_exit_code_and_message(server, image_path):
    result = run_client("generate", "--server", server.address, "--image", image_path,
                        "--top-p", "2", "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "INVALID_ARGUMENT" in result.stderr and "parameters.top_p" in result.stderr


def test_info_tokenize_health(server):
    info = run_client("info", "--server", server.address)
    assert info.returncode == 0
    assert json.loads(info.stdout)["model_id"] == "iblip/tiny-llama-random"
    tokens = run_client("tokenize", "--server", server.address, "--text", "a red circle")
    assert tokens.returncode == 0
    parsed = json.loads(tokens.stdout)
    assert parsed["input_ids"][0] == 2 and "qformer_input_ids" in parsed
    health = run_client("health", "--server", server.address)
    assert health.returncode == 0 and health.stdout.strip() == "SERVING"


def test_usage_errors_and_unreachable_server(image_path):
    assert run_client("generate", "--image", image_path, "--bogus", "1").returncode == 2
    assert run_client("frobnicate").returncode == 2
    down = run_client("info", "--server", "127.0.0.1:1", "--timeout", "2")
    assert down.returncode == 3
    assert "UNAVAILABLE" in down.stderr
