"""Special-token strings in prompts through the server's Tokenize: as their
special tokens by default (Hugging Face's behaviour), as plain text with
--tokenizer.special-tokens-as-text true."""

from server_harness import start_server, stop_server

TEXT = "a</s>b [SEP] c"
LM_EOS, QFORMER_SEP = 2, 102  # the tiny Vicuna-layout package


def tokenize(*args):
    from iblip_client import Client
    server = start_server(*args)
    try:
        with Client(server.address, timeout=30) as client:
            return client.tokenize(TEXT)
    finally:
        assert stop_server(server) == 0, "".join(server.log)


def test_special_token_strings_are_special_by_default_and_text_on_request():
    special = tokenize()
    plain = tokenize("--tokenizer.special-tokens-as-text", "true")
    assert list(special.input_ids).count(LM_EOS) == 2  # BOS and the </s> in the text
    assert "</s>" in list(special.tokens)[1:]
    assert list(plain.input_ids).count(LM_EOS) == 1  # BOS only
    assert list(special.qformer_input_ids).count(QFORMER_SEP) == 2
    assert list(plain.qformer_input_ids).count(QFORMER_SEP) == 1
