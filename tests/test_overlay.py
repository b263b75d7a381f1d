import torch

from ffrep.datasets import DATASETS
from ffrep.models import LabelOverlay
from ffrep.train import sample_negatives


def test_overlay_writes_the_label_into_row_zero():
    overlay = LabelOverlay(DATASETS["fashion_mnist"], value=2.5)
    x = torch.randn(4, 784)
    out = overlay.apply(x, torch.tensor([0, 3, 9, 3]))
    assert out[1, 3] == 2.5 and out[2, 9] == 2.5
    assert (out[:, :10] != 0).sum() == 4
    assert torch.equal(out[:, 10:], x[:, 10:])


def test_overlay_rgb_uses_every_channel():
    overlay = LabelOverlay(DATASETS["svhn"], value=1.0)
    out = overlay.apply(torch.randn(2, 3 * 32 * 32), torch.tensor([4, 0]))
    img = out.view(2, 3, 32, 32)
    assert torch.equal(img[0, :, 0, :10].nonzero()[:, 1], torch.tensor([4, 4, 4]))
    assert (img[1, :, 0, :10] == torch.tensor([1.0] + [0.0] * 9)).all()


def test_negatives_never_carry_the_true_label():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (5000,), generator=gen)
    for scheme in ("paper", "uniform"):
        image, wrong = sample_negatives(labels, list(range(10)), scheme, gen)
        assert image.shape == wrong.shape == labels.shape
        assert (labels[image] != wrong).all()
        assert set(wrong.unique().tolist()) == set(range(10))


def test_paper_negatives_are_drawn_without_replacement_from_the_wrong_copies():
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(1000) % 10
    image, wrong = sample_negatives(labels, list(range(10)), "paper", gen)
    pairs = set(zip(image.tolist(), wrong.tolist(), strict=True))
    assert len(pairs) == len(labels)  # no wrong-label copy drawn twice
    counts = torch.bincount(image, minlength=1000)
    assert counts.max() > 1 and (counts == 0).any()  # not one per image


def test_held_out_classes_never_appear_as_negatives():
    gen = torch.Generator().manual_seed(0)
    allowed = [0, 1, 2, 4, 5, 6, 8, 9]
    labels = torch.tensor(allowed * 100)
    for scheme in ("paper", "uniform"):
        image, wrong = sample_negatives(labels, allowed, scheme, gen)
        assert not torch.isin(wrong, torch.tensor([3, 7])).any()
        assert (labels[image] != wrong).all()
