import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from kdforge.data import Split, build_dataset, make_loader
from kdforge.data.augment import random_shift
from kdforge.errors import KdforgeError


def test_digits_split_is_deterministic_disjoint_and_standardised():
    a, b = build_dataset("digits", seed=0), build_dataset("digits", seed=0)
    c = build_dataset("digits", seed=1)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.y, c.train.y)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert abs(float(a.train.x.mean())) < 1e-4 and abs(float(a.train.x.std()) - 1) < 1e-3
    rows = lambda s: {tuple(r) for r in s.x.flatten(1).numpy().round(5).tolist()}  # noqa: E731
    assert len(rows(a.test) & rows(a.train)) < 5  # digits has a few exact duplicate images
    big = build_dataset("digits", image_size=16, channels=3)
    assert big.input_shape == (3, 16, 16)
    with pytest.raises(KdforgeError, match="channels: Input should be 1 or 3"):
        build_dataset("digits", channels=2)


def test_mnist1d_is_generated_locally():
    data = build_dataset("mnist1d", seed=0, val_fraction=0.2)
    assert data.input_shape == (1, 40) and len(data.test) == 1000 and len(data.train) + len(data.val) == 4000


def test_arrays_from_npz_and_npy_dir(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 5)).astype(np.float32), rng.integers(0, 4, 200)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = build_dataset("arrays", path=str(tmp_path / "d.npz"), val_fraction=0.1, test_fraction=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (140, 20, 40) and data.num_classes == 4
    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "x.npy", x)
    np.save(tmp_path / "dir" / "y.npy", y)
    assert build_dataset("arrays", path=str(tmp_path / "dir")).input_shape == (5,)
    np.savez(tmp_path / "bad.npz", inputs=x)
    with pytest.raises(KdforgeError, match=r"must hold 'x' and 'y'.*found \['inputs'\]"):
        build_dataset("arrays", path=str(tmp_path / "bad.npz"))


def test_unknown_dataset_option_is_rejected():
    with pytest.raises(KdforgeError, match="unknown option 'image_sise' \\(did you mean 'image_size'\\?\\)"):
        build_dataset("digits", image_sise=16)


def test_batches_cover_each_sample_once_in_a_seeded_order_and_resume_mid_epoch():
    split = Split(torch.arange(10).float().unsqueeze(1), torch.arange(10))
    loader = make_loader(split, 3, shuffle=True, seed=5)
    epoch0 = [y.tolist() for _, y in loader.epoch(0)]
    assert sorted(sum(epoch0, [])) == list(range(10)) and len(loader) == 4
    assert epoch0 == [y.tolist() for _, y in loader.epoch(0)] != [y.tolist() for _, y in loader.epoch(1)]
    assert [y.tolist() for _, y in loader.epoch(0, start=2)] == epoch0[2:]
    dataset_loader = make_loader(TensorDataset(split.x, split.y), 3, shuffle=True, seed=5)
    assert [y.tolist() for _, y in dataset_loader.epoch(0)] == epoch0  # DataLoader path: same order
    assert [y.tolist() for _, y in dataset_loader.epoch(1)] == [
        y.tolist() for _, y in loader.epoch(1)
    ]  # one loader, new order
    assert [y.tolist() for _, y in dataset_loader.epoch(0, start=2)] == epoch0[2:]


def test_both_batch_sources_shard_each_global_batch_and_carry_indices_alike():
    split = Split(torch.arange(10).float().unsqueeze(1) * 10, torch.arange(10))
    for kind in (split, TensorDataset(split.x, split.y)):
        ranks = []
        for rank in (0, 1):
            loader = make_loader(kind, 4, shuffle=True, seed=3)
            loader.shard, loader.indexed = (rank, 2), True
            ranks.append([(x.flatten().tolist(), y.tolist(), i.tolist()) for x, y, i in loader.epoch(1)])
        for (x0, y0, i0), (x1, y1, i1) in zip(*ranks):
            assert y0 == i0 and y1 == i1  # indices are the samples' own
            assert x0 == [10.0 * v for v in y0] and x1 == [10.0 * v for v in y1]
            assert len(y0) + len(y1) <= 4 and not set(y0) & set(y1)  # one global batch split between the ranks
        assert sorted(v for rank in ranks for _, y, _ in rank for v in y) == list(range(10))


def test_random_shift_moves_whole_samples_within_bounds():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    out = random_shift(x, 2)
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert out.sum(dim=(1, 2, 3)).eq(1).all()  # the dot moves, it is not smeared
    assert rows.min() == 2 and rows.max() == 6 and cols.min() == 2 and cols.max() == 6
    seq = torch.arange(10.0).view(1, 1, 10).repeat(32, 1, 1)
    shifted = random_shift(seq, 1)
    assert ((shifted - seq).abs() <= 1).all() and not torch.equal(shifted, seq)


def test_split_seed_holds_the_split_while_the_recipe_seed_varies():
    from kdforge.config import Recipe
    from kdforge.data import recipe_data

    def split(seed, **data):
        raw = {
            "seed": seed,
            "data": {"name": "digits", **data},
            "teacher": {"model": {"name": "cnn"}},
            "student": {"model": {"name": "mlp"}},
            "losses": [{"name": "ce"}],
        }
        return recipe_data(Recipe.from_dict(raw).data, seed).test.y

    assert torch.equal(split(0), split(1, split_seed=0))
    assert not torch.equal(split(0), split(1))


def test_a_split_too_small_for_every_class_is_drawn_at_random_but_seeded():
    from kdforge.data.bundle import stratified_split

    y = np.array([0] * 10 + [1] * 10 + list(range(2, 12)))  # ten classes with one sample each
    train, val = stratified_split(y, (0.2,), seed=3)
    assert len(val) == 6 and sorted(np.concatenate([train, val]).tolist()) == list(range(30))
    assert all(np.array_equal(a, b) for a, b in zip(stratified_split(y, (0.2,), seed=3), (train, val)))


def test_large_npy_inputs_are_memory_mapped_and_read_row_by_row_like_in_memory_ones(tmp_path):
    import pickle

    from kdforge.data import DatasetSplit

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(3.0, 2.0, size=(300, 6)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 3, 300))
    np.save(tmp_path / "x_test.npy", rng.normal(3.0, 2.0, size=(40, 6)).astype(np.float32))
    np.save(tmp_path / "y_test.npy", rng.integers(0, 3, 40))
    held = build_dataset("arrays", path=str(tmp_path), memory_map=False, val_fraction=0.2)
    mapped = build_dataset("arrays", path=str(tmp_path), memory_map=True, val_fraction=0.2)
    assert isinstance(mapped.train, DatasetSplit) and isinstance(mapped.train.dataset.x, np.memmap)
    assert np.allclose(mapped.scaling, held.scaling, atol=1e-5)
    for a, b in ((held.train, mapped.train), (held.val, mapped.val), (held.test, mapped.test)):
        x, y = b.first(len(b))
        assert torch.allclose(a.x, x, atol=1e-5) and torch.equal(a.y, y)
    copy = pickle.loads(pickle.dumps(mapped.train.dataset))  # what a spawned worker gets: the file, reopened
    assert isinstance(copy.x, np.memmap) and len(pickle.dumps(mapped.train.dataset)) < 10_000
    assert torch.equal(copy[5][0], mapped.train.dataset[5][0])
    batches = make_loader(mapped.train, 64, shuffle=True, seed=2, num_workers=1)
    sizes = [len(y) for _, y in batches.epoch(0)]
    assert sizes == [64, 64, 64, 48] and len(mapped.train) == 240
    with pytest.raises(KdforgeError, match="memory_map reads a folder"):
        build_dataset("arrays", path=str(tmp_path / "x.npy"), memory_map=True)


@pytest.mark.parametrize("finished", [True, False])
def test_a_loaders_workers_stop_as_soon_as_it_is_let_go_or_closed(finished):
    """A batch source in no reference cycle is freed at once, its workers with it; left to the cyclic garbage
    collector, the loader's shutdown waited 5 s for each worker before killing it."""
    import gc

    data = TensorDataset(torch.arange(64.0).view(32, 2), torch.zeros(32, dtype=torch.long))

    def started() -> tuple:
        batches = make_loader(data, 4, shuffle=True, num_workers=1)
        for epoch in range(2):
            for i, _ in enumerate(batches.epoch(epoch)):
                if not finished and i == 2:
                    break
        return batches, batches.loader._iterator._workers[0]

    gc.disable()
    try:
        batches, worker = started()
        del batches
        assert not worker.is_alive()
        batches, worker = started()
        batches.close()
        assert not worker.is_alive()
    finally:
        gc.enable()
