"""Configuration from the outside: every option is a flag, flags override
the YAML file, bad values exit 2 naming the option, JSON logs carry request ids."""

import json
import re
import subprocess

from server_harness import REPO_DIR, SERVER_BIN, png_bytes, start_server, stop_server


def test_help_lists_every_option_of_the_shipped_config():
    result = subprocess.run([SERVER_BIN, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    flags = set(re.findall(r"^  --(\S+)", result.stdout, re.M))
    import yaml
    with open(f"{REPO_DIR}/config/server.yaml") as f:
        config = yaml.safe_load(f)
    for section, value in config.items():
        names = [f"{section}.{k}" for k in value] if isinstance(value, dict) else [section]
        for name in names:
            assert name.replace("_", "-") in flags, name


def test_bad_option_values_exit_2_naming_the_option(tmp_path):
    result = subprocess.run([SERVER_BIN, "--model", "x", "--scheduler.max-queue-size", "lots"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "scheduler.max_queue_size must be uint32, got 'lots'" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("scheduler:\n  max_queue: 3\n")
    result = subprocess.run([SERVER_BIN, "--model", "x", "--config", str(bad)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{bad}:2: unknown option 'scheduler.max_queue'" in result.stderr


def test_flags_override_the_file_and_json_logs_carry_request_ids(tmp_path):
    from iblip_client import Client
    config = tmp_path / "server.yaml"
    config.write_text("logging:\n  format: text\nlimits:\n  max_new_tokens: 5\n"
                      "  default_max_new_tokens: 5\n")
    server = start_server("--config", str(config), "--logging.format", "json")
    try:
        with Client(server.address, timeout=30) as client:
            info = client.info()
            assert info.limits.max_new_tokens == 5  # from the file
            client.generate_unary(png_bytes(), "hi", max_new_tokens=2, request_id="trace-me-42")
    finally:
        assert stop_server(server) == 0, "".join(server.log)
    records = [json.loads(line) for line in server.whole_log() if line.strip()]  # all JSON
    assert {"time", "level", "message"} <= set(records[0])
    assert any("trace-me-42" in r["message"] for r in records)
