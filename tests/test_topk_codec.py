"""The compact top-k form of a cache: ids packed at the bits the vocabulary needs, log-probabilities in 16 or 8 bits."""

import numpy as np
import pytest
import torch

from kdforge.teachers._topk_codec import (
    LOGP_FLOOR,
    decode_log_probs,
    encode_log_probs,
    id_bits,
    pack_ids,
    packed_bytes,
    unpack_ids,
)


@pytest.mark.parametrize("vocab", [2, 10, 256, 32_000, 50_257, 128_256, 2**25])
def test_packed_ids_round_trip_at_the_bits_the_vocabulary_needs(vocab):
    bits = id_bits(vocab)
    assert 2 ** (bits - 1) < vocab <= 2**bits
    ids = np.random.default_rng(vocab).integers(0, vocab, size=(3, 5, 13))
    ids[0, 0, :2] = [0, vocab - 1]
    packed = pack_ids(ids, bits)
    assert packed.shape == (3, 5, packed_bytes(13, bits)) and packed.dtype == np.uint8
    assert torch.equal(unpack_ids(torch.from_numpy(packed), 13, bits), torch.from_numpy(ids))


def test_log_probabilities_in_16_and_8_bits():
    log_probs = torch.log_softmax(torch.randn(4, 50) * 3, -1).topk(20).values
    assert torch.equal(decode_log_probs(torch.from_numpy(encode_log_probs(log_probs, 16))), log_probs.half().float())
    codes = torch.from_numpy(encode_log_probs(log_probs, 8))
    assert codes.dtype == torch.uint8
    decoded = decode_log_probs(codes)
    kept = log_probs > LOGP_FLOOR
    step = -LOGP_FLOOR / 255
    assert (decoded[kept] - log_probs[kept]).abs().max() <= step / 2 + 1e-6  # each probability within ±4 %
    assert bool((decoded[~kept] == LOGP_FLOOR).all())
    with pytest.raises(ValueError, match="8 or 16 bits"):
        encode_log_probs(log_probs, 4)
