"""Pre-training and fine-tuning of the neural family (tiny, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="make install puts torch in the venv")

from models.base import TrainingSet  # noqa: E402
from models.neural import NeuralRanker  # noqa: E402
from models.sequence import EncoderCheckpoint, EncoderConfig, ItemVocab, pretrain  # noqa: E402
from tests.unit.test_model_contract import tiny_rows  # noqa: E402

N_ITEMS, STEP = 60, 7


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and two processes share this machine's 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted(n_users: int, seed: int) -> list[np.ndarray]:
    """Sequences in which item i is always followed by item i + STEP (mod N_ITEMS)."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, N_ITEMS) + np.arange(rng.integers(4, 16)) * STEP) % N_ITEMS + 100
            for _ in range(n_users)]


@pytest.mark.parametrize("negatives", [None, 32], ids=["full-softmax", "sampled-softmax"])
def test_pretrained_encoder_recovers_a_planted_next_item_pattern(negatives):
    ck = pretrain(planted(300, 0), EncoderConfig(dim=32, layers=1, max_len=10), epochs=12,
                  batch_size=64, lr=5e-3, negatives=negatives, seed=0, patience=12)
    assert ck.info["negatives"] == (negatives or "full")
    enc = ck.encoder().eval()
    test = planted(200, 1)
    seqs = torch.from_numpy(ck.vocab.pad([s[:-1] for s in test], 10))
    target = ck.vocab.index(np.array([s[-1] for s in test]))
    with torch.no_grad():
        scores = enc.user_state(seqs) @ enc.items.weight.T
    scores[:, 0] = -torch.inf
    top10 = scores.topk(10, 1).indices.numpy()
    hit_rate = float(np.mean([t in row for t, row in zip(target, top10, strict=True)]))
    chance = 10 / N_ITEMS
    assert hit_rate > 3 * chance, f"HR@10 {hit_rate:.3f} vs chance {chance:.3f}"
    info = ck.info
    assert info["samples_per_s"] > 0 and len(info["curves"]["pretrain_loss"]) == 12
    assert info["curves"]["pretrain_loss"][-1] < info["curves"]["pretrain_loss"][0]


def test_checkpoint_round_trip(tmp_path: Path):
    ck = pretrain(planted(50, 2), EncoderConfig(dim=8, layers=1, max_len=6), epochs=1)
    back = EncoderCheckpoint.load(ck.save(tmp_path / "e.pt"))
    assert back.config == ck.config and np.array_equal(back.item_ids, ck.item_ids)
    for k, v in ck.state.items():
        assert torch.equal(back.state[k], v)


def test_fine_tuning_starts_from_the_checkpoint(tmp_path: Path):
    ck = pretrain([np.arange(40) % 80 for _ in range(30)] + planted(30, 3),
                  EncoderConfig(dim=16, layers=1, max_len=12), epochs=1)
    path = ck.save(tmp_path / "encoder.pt")
    train = tiny_rows(20, 1)
    model = NeuralRanker(config=EncoderConfig(dim=99))  # the checkpoint's shape wins
    net = model.initial_network(TrainingSet((), pretrained=path), train)
    assert model.config == ck.config
    for k, v in ck.state.items():
        assert torch.equal(net.encoder.state_dict()[k], v), k
    with pytest.raises(ValueError, match="pretrain"):
        NeuralRanker().initial_network(TrainingSet(()), train)


def test_frozen_fine_tuning_leaves_the_encoder_unchanged(tmp_path: Path):
    ck = pretrain(planted(60, 4), EncoderConfig(dim=16, layers=1, max_len=12), epochs=1)
    data_dir = tmp_path / "rows"
    data_dir.mkdir()
    tiny_rows(40, 1).to_parquet(data_dir / "p.parquet")
    model = NeuralRanker(epochs=2, finetune="frozen")
    model.fit(TrainingSet((data_dir,), pretrained=ck.save(tmp_path / "e.pt"),
                          checkpoint_dir=tmp_path / "ckpt"))
    for k, v in ck.state.items():
        assert torch.equal(model.net.encoder.state_dict()[k].cpu(), v), k
    # the epoch checkpoint (tests/integration/test_ddp.py resumes it) is gone once trained
    assert not (tmp_path / "ckpt" / "neural" / "resume.pt").exists()


def test_vocab_pads_left_and_maps_unknown_to_zero():
    vocab = ItemVocab(np.array([5, 9, 7]))
    assert vocab.index(np.array([5, 7, 9, 6])).tolist() == [1, 2, 3, 0]
    assert vocab.pad([[9, 5], [], None, [5, 7, 9, 5]], 3).tolist() == [
        [0, 3, 1], [0, 0, 0], [0, 0, 0], [2, 3, 1]]


def test_scratch_control_is_blind_to_the_encoder_score(tmp_path: Path):
    """neural_scratch, the control of pre-training, must not learn from the pre-trained
    encoder's score feature; neural does read it."""
    from models.neural import NeuralScratchRanker

    data_dir = tmp_path / "rows"
    data_dir.mkdir()
    tiny_rows(40, 1).to_parquet(data_dir / "p.parquet")
    rows = tiny_rows(10, 2)
    moved = rows.assign(od_encoder_score=rows["od_encoder_score"] * 50 + 3)
    scratch = NeuralScratchRanker(epochs=1)
    scratch.fit(TrainingSet((data_dir,)))
    np.testing.assert_array_equal(scratch.score(rows), scratch.score(moved))
    ck = pretrain(planted(60, 4), EncoderConfig(dim=16, layers=1, max_len=12), epochs=1)
    tuned = NeuralRanker(epochs=1)
    tuned.fit(TrainingSet((data_dir,), pretrained=ck.save(tmp_path / "e.pt")))
    assert not np.array_equal(tuned.score(rows), tuned.score(moved))
