import pytest
import torch

from ffrep.datasets import DATASETS
from ffrep.models import FFNet, LabelOverlay, ff_label_goodness, ff_predict, goodness


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10"])
@pytest.mark.parametrize("normalization", ["l2", "none"])
def test_shared_first_layer_equals_ten_labelled_passes(dataset, normalization):
    torch.manual_seed(0)
    info = DATASETS[dataset]
    net = FFNet(info.n_inputs, [20, 16], normalization)
    x = torch.randn(37, info.n_inputs)
    overlay = LabelOverlay(info, value=float(x.max()))
    fast = ff_label_goodness(net, x, overlay, "l2_norm", chunk=10)
    direct = torch.stack(
        [
            torch.stack([goodness(h, "l2_norm") for h in net(overlay.apply(x, c))], -1)
            for c in range(10)
        ],
        dim=1,
    )
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)


def test_prediction_rules():
    g = torch.zeros(2, 10, 3)
    g[0, 4, :] = 5.0
    g[1, 2, 0] = 100.0  # only the first layer prefers class 2
    g[1, 7, 1:] = 1.0
    assert ff_predict(g, "softmax_sum").tolist()[0] == 4
    assert ff_predict(g, "goodness_sum_skip_first").tolist() == [4, 7]


def test_goodness_kinds():
    h = torch.tensor([[3.0, 4.0]])
    assert goodness(h, "l2_norm").item() == 5.0
    assert goodness(h, "sum_of_squares").item() == 25.0
    assert goodness(h, "mean_of_squares").item() == 12.5
