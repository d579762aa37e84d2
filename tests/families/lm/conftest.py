import pytest

from datafiles import write_causal_lm, write_tokenizer


@pytest.fixture(scope="session")
def lm_tokenizer(tmp_path_factory):
    """A BPE tokenizer folder trained here, with a chat template."""
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, lm_tokenizer):
    """A 4-block Llama on the tokenizer's vocabulary, saved with save_pretrained."""
    return write_causal_lm(tmp_path_factory.mktemp("llama"), 320, "llama", layers=4)
