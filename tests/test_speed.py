"""The fast training and prediction paths against the straightforward ones, the
benchmark in quick mode, and the planner's FLOP counts."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch

from ffrep import bench, kernels, plan
from ffrep.cli import main
from ffrep.config import RunConfig, load_config
from ffrep.datasets import DATASETS, N_CLASSES
from ffrep.models import (
    FFNet,
    LabelOverlay,
    ff_label_goodness,
    ff_loss,
    goodness,
    label_free_,
    labelled_pre,
    twice_labelled_pre,
    unit_normalize,
)
from ffrep.train import (
    Checkpoint,
    Checkpointer,
    FFData,
    generator,
    sample_negatives,
    train_bp_ff,
    train_ff,
)

ALL = list(range(N_CLASSES))


def small_run(algorithm="ff", **changes) -> RunConfig:
    run = RunConfig(
        dataset="fashion_mnist",
        algorithm=algorithm,
        architecture="tiny",
        seed=3,
        hidden_units=[24, 16, 16],
        learning_rate=1e-3,
        epochs=2,
        batch_size=64,
        device="cpu",
    )
    for key, value in changes.items():
        setattr(run, key, value)
    return run


def small_data(n=200, dataset="fashion_mnist", seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DATASETS[dataset].n_inputs, generator=gen)
    y = torch.randint(0, N_CLASSES, (n,), generator=gen)
    return x, y


@pytest.mark.parametrize("dataset", ["fashion_mnist", "svhn"])
@pytest.mark.parametrize("normalization", ["l2", "none"])
def test_labelled_pre_equals_the_layer_on_the_labelled_input(dataset, normalization):
    x, y = small_data(50, dataset)
    overlay = LabelOverlay(DATASETS[dataset], float(x.max()))
    layer = torch.nn.Linear(x.shape[1], 7)
    labels = torch.randint(0, N_CLASSES, (50,))
    direct = layer(unit_normalize(overlay.apply(x, labels), normalization))

    base = x.clone()
    scale = label_free_(base, overlay, normalization)
    fast = labelled_pre(layer, overlay.positions, base, scale, labels)
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dataset", ["fashion_mnist", "svhn"])
def test_twice_labelled_pre_and_its_gradients_equal_the_plain_layer(dataset):
    x, y = small_data(40, dataset)
    overlay = LabelOverlay(DATASETS[dataset], float(x.max()))
    layer = torch.nn.Linear(x.shape[1], 7)
    plain = copy.deepcopy(layer)
    labels = torch.stack([y, (y + 1 + torch.randint(0, 9, y.shape)) % N_CLASSES])
    weights = torch.rand(2 * len(y), 7)  # a loss that weighs every output

    inputs = torch.cat([overlay.apply(x, labels[0]), overlay.apply(x, labels[1])])
    direct = plain(unit_normalize(inputs, "l2"))
    (direct * weights).sum().backward()

    base = x.clone()
    scale = label_free_(base, overlay, "l2")
    fast = twice_labelled_pre(layer, overlay.positions, base, scale, labels)
    (fast * weights).sum().backward()
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, plain.weight.grad)
    torch.testing.assert_close(layer.bias.grad, plain.bias.grad)


@pytest.mark.parametrize("sampling", ["paper", "uniform"])
def test_batch_pre_equals_the_straightforward_batch(sampling):
    run = small_run(negative_sampling=sampling)
    x, y = small_data()
    overlay = LabelOverlay(DATASETS["fashion_mnist"], float(x.max()))
    layer = torch.nn.Linear(x.shape[1], 9)
    ffdata = FFData(x.clone(), y, ALL, run, overlay, torch.device("cpu"))
    assert ffdata.same_image == (sampling == "uniform")
    image, wrong = ffdata.fixed
    idx = torch.randperm(len(y))[:37]

    pos = overlay.apply(x[idx], y[idx])
    neg = overlay.apply(x[image[idx]], wrong[idx])
    direct = layer(unit_normalize(torch.cat([pos, neg]), "l2"))
    fast = ffdata.batch_pre(layer, idx, image, wrong)
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["l2_norm", "sum_of_squares", "mean_of_squares"])
@pytest.mark.parametrize("sampling", ["paper", "uniform"])
def test_hand_computed_step_equals_the_autograd_step(kind, sampling):
    from ffrep.ffstep import FFStep
    from ffrep.models import relu_goodness
    from ffrep.train import adam, batch_pre, optimizer_step

    run = small_run(negative_sampling=sampling, goodness=kind)
    x, y = small_data()
    overlay = LabelOverlay(DATASETS["fashion_mnist"], float(x.max()))
    ffdata = FFData(x.clone(), y, ALL, run, overlay, torch.device("cpu"))
    batches = ffdata.batches(*ffdata.fixed)
    torch.manual_seed(0)
    plain = torch.nn.Linear(x.shape[1], 12)
    hand = copy.deepcopy(plain)
    plain_opt = adam(plain.parameters(), run, torch.device("cpu"))
    step = FFStep(hand, adam(hand.parameters(), run, torch.device("cpu")), run)
    # batches that shrink and grow again: the kept buffers are reused and regrown
    for size in (50, 50, 17, 64, 3):
        idx = torch.randperm(len(y))[:size]
        g = relu_goodness(batch_pre(plain, batches, idx), kind)
        want = ff_loss(g[:size], g[size:], run.threshold)
        optimizer_step(plain_opt, want)
        got = step(batches, idx)
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
        for p, q in zip(hand.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
            # Adam moves a weight whose gradient is at the rounding level by
            # up to ~lr, so the weights are compared more loosely
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_stored_deeper_inputs_step_by_hand_as_through_autograd():
    from ffrep.ffstep import FFStep
    from ffrep.models import relu_goodness
    from ffrep.train import FFInputs, adam, batch_pre, optimizer_step

    run = small_run()
    x, y = small_data()
    overlay = LabelOverlay(DATASETS["fashion_mnist"], float(x.max()))
    torch.manual_seed(0)
    net = FFNet(x.shape[1], run.hidden_units)
    inputs = FFInputs(net, FFData(x.clone(), y, ALL, run, overlay, torch.device("cpu")))
    inputs.advance()
    batches = inputs.batches(0)
    plain, hand = net.layers[1], copy.deepcopy(net.layers[1])
    plain_opt = adam(plain.parameters(), run, torch.device("cpu"))
    step = FFStep(hand, adam(hand.parameters(), run, torch.device("cpu")), run)
    for size in (64, 64, 9):
        idx = torch.randperm(len(y))[:size]
        g = relu_goodness(batch_pre(plain, batches, idx), run.goodness)
        optimizer_step(plain_opt, ff_loss(g[:size], g[size:], run.threshold))
        step(batches, idx)
    for p, q in zip(hand.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_bf16_ff_epochs_go_through_autograd():
    from ffrep.ffstep import FFStep

    with pytest.raises(ValueError, match="fp32 or tf32"):
        FFStep(torch.nn.Linear(4, 4), None, small_run(precision="bf16"))
    run = small_run(precision="bf16")
    x, y = small_data()
    torch.manual_seed(0)
    net = FFNet(x.shape[1], run.hidden_units)
    overlay = LabelOverlay(DATASETS["fashion_mnist"], float(x.max()))
    ffdata = FFData(x.clone(), y, ALL, run, overlay, torch.device("cpu"))
    gen = generator(run.seed, "shuffle")
    history = train_ff(net, ffdata, run, Checkpoint(), Checkpointer(None, run), gen)
    assert all(math.isfinite(v) for layer in history for v in layer)


def reference_ff(net, x, y, run):
    """Greedy FF written the plain way, with the trainer's draws."""
    overlay = LabelOverlay(DATASETS[run.dataset], float(x.max()))
    gen = generator(run.seed, "shuffle")
    pos = overlay.apply(x, y)

    def negatives(epoch):
        draw = generator(run.seed, "negatives", epoch)
        image, wrong = sample_negatives(y, ALL, run.negative_sampling, draw)
        return overlay.apply(x[image], wrong)

    fixed = negatives(-1) if not run.resample_negatives else None
    neg = fixed
    for i, layer in enumerate(net.layers):
        opt = torch.optim.Adam(layer.parameters(), lr=run.learning_rate)
        for epoch in range(run.epochs):
            if fixed is None:
                neg = negatives(epoch)
                with torch.no_grad():
                    for j in range(i):
                        neg = net.layer_forward(j, neg)
            perm = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), run.batch_size):
                idx = perm[start : start + run.batch_size]
                gp = goodness(net.layer_forward(i, pos[idx]), run.goodness)
                gn = goodness(net.layer_forward(i, neg[idx]), run.goodness)
                loss = ff_loss(gp, gn, run.threshold)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            pos = net.layer_forward(i, pos)
            if fixed is not None:
                neg = net.layer_forward(i, neg)
    return net


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"negative_sampling": "uniform"},
        {"resample_negatives": True},
        {"input_normalization": "none", "goodness": "sum_of_squares"},
        {"goodness": "mean_of_squares", "negative_sampling": "uniform"},
        {"ff_deeper_inputs": "recomputed"},
        {"ff_deeper_inputs": "recomputed", "negative_sampling": "uniform"},
        {"ff_deeper_inputs": "recomputed", "resample_negatives": True},
    ],
)
def test_train_ff_equals_the_straightforward_loop(changes):
    run = small_run(**changes)
    x, y = small_data()
    torch.manual_seed(0)
    net = FFNet(x.shape[1], run.hidden_units, run.input_normalization)
    expected = reference_ff(copy.deepcopy(net), x, y, run)

    overlay = LabelOverlay(DATASETS[run.dataset], float(x.max()))
    ffdata = FFData(x.clone(), y, ALL, run, overlay, torch.device("cpu"))
    gen = generator(run.seed, "shuffle")
    train_ff(net, ffdata, run, Checkpoint(), Checkpointer(None, run), gen)
    for got, want in zip(net.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_train_bp_ff_equals_the_straightforward_loop():
    run = small_run("bp_ff")
    x, y = small_data()
    torch.manual_seed(0)
    net = FFNet(x.shape[1], run.hidden_units)
    ref = copy.deepcopy(net)

    # the plain loop, with the trainer's draws
    overlay = LabelOverlay(DATASETS[run.dataset], float(x.max()))
    draw = generator(run.seed, "negatives", -1)
    image, wrong = sample_negatives(y, ALL, run.negative_sampling, draw)
    pos, neg = overlay.apply(x, y), overlay.apply(x[image], wrong)
    opt = torch.optim.Adam(ref.parameters(), lr=run.learning_rate)
    gen = generator(run.seed, "shuffle")
    for _ in range(run.epochs):
        perm = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), run.batch_size):
            idx = perm[start : start + run.batch_size]
            gp = sum(goodness(h, run.goodness) for h in ref(pos[idx]))
            gn = sum(goodness(h, run.goodness) for h in ref(neg[idx]))
            loss = ff_loss(gp, gn, run.threshold)
            opt.zero_grad()
            loss.backward()
            opt.step()

    ffdata = FFData(x.clone(), y, ALL, run, overlay, torch.device("cpu"))
    gen = generator(run.seed, "shuffle")
    train_bp_ff(net, ffdata, run, Checkpoint(), Checkpointer(None, run), gen)
    for got, want in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_bf16_training_stays_close_to_fp32():
    x, y = small_data()
    overlay = LabelOverlay(DATASETS["fashion_mnist"], float(x.max()))
    losses = {}
    for precision in ("fp32", "bf16"):
        run = small_run(precision=precision, epochs=1)
        torch.manual_seed(0)
        net = FFNet(x.shape[1], run.hidden_units)
        ffdata = FFData(x.clone(), y, ALL, run, overlay, torch.device("cpu"))
        gen = generator(run.seed, "shuffle")
        history = train_ff(net, ffdata, run, Checkpoint(), Checkpointer(None, run), gen)
        losses[precision] = torch.tensor(history).flatten()
    assert torch.isfinite(losses["bf16"]).all()
    assert not torch.equal(losses["bf16"], losses["fp32"])
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=0.05, atol=0.02)


def test_ff_label_goodness_equals_ten_plain_passes():
    x, _ = small_data(90)
    overlay = LabelOverlay(DATASETS["fashion_mnist"], float(x.max()))
    torch.manual_seed(0)
    net = FFNet(x.shape[1], [20, 12]).eval()
    fast = ff_label_goodness(net, x, overlay, "l2_norm", chunk=32)
    plain = bench.ten_plain_passes(net, x, overlay, "l2_norm")
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_benchmark_runs_in_quick_mode(capsys):
    table = bench.run_benchmark(quick=True, cases=(*bench.CASES, "svhn"))
    cases = set(table["case"])
    for expected in (
        "FF epoch (paper negatives)",
        "BP/FF epoch",
        "BP epoch",
        "FF prediction, 10 labels",
        "FF training memory (svhn size, stored inputs)",
        "FF training memory (svhn size, recomputed inputs)",
    ):
        assert expected in cases
    ours = table[table["method"] == "ffrep"]
    checked = ours["max_abs_diff"].dropna()
    assert len(checked) >= 5 and (checked < 1e-3).all()
    assert (table["seconds"] > 0).all()
    assert "| case |" in bench.format_table(table)
    checked = bench.targets(table)
    assert len(checked) == len(bench.TARGETS)
    memory = table[table["case"].str.startswith("FF training memory")]
    assert (memory["peak_vs_images"] > 0).all()
    assert list(memory["peak_vs_images"]) == pytest.approx(
        list(2 * memory["peak_vs_pos_neg"])
    )
    # a target is met exactly when the measured value is within its limit
    assert (
        (checked["measured"] <= checked["limit"]) == (checked["met"] == "yes")
    ).all()
    assert "| target |" in bench.format_table(checked)


def test_training_flops_count_each_product():
    run = small_run(hidden_units=[5, 3], epochs=2)
    d, n = DATASETS["fashion_mnist"].n_inputs, 100
    # forward and weight gradient over 2N rows per epoch, plus the images'
    # product with the frozen layer 1, which layer 2's inputs are built from
    expected = 2 * (2 * 2 * (2 * n) * (d * 5 + 5 * 3) + n * d * 5)
    assert plan.training_flops(run, n) == expected
    uniform = small_run(hidden_units=[5, 3], epochs=2, negative_sampling="uniform")
    saved = 2 * 2 * 2 * n * d * 5  # the first layer's image product, once not twice
    assert plan.training_flops(uniform, n) == expected - saved
    # three layers: layer 3's inputs come from a pass through layer 2, once when
    # stored, for every epoch's batches when recomputed
    deep = dict(hidden_units=[5, 4, 3], epochs=2)
    trained = 2 * 2 * (2 * n) * (d * 5 + 5 * 4 + 4 * 3) + n * d * 5
    stored = small_run(**deep)
    assert plan.training_flops(stored, n) == 2 * (trained + 2 * n * 5 * 4)
    recomputed = small_run(**deep, ff_deeper_inputs="recomputed")
    assert plan.training_flops(recomputed, n) == 2 * (trained + 2 * 2 * n * 5 * 4)
    resampled = small_run(**deep, resample_negatives=True)
    assert plan.training_flops(resampled, n) == 2 * (
        trained + n * 5 * 4 + 2 * n * 5 * 4
    )
    bp = small_run("bp", hidden_units=[5], epochs=1)
    fwd = n * (d * 5 + 5 * N_CLASSES)
    assert plan.training_flops(bp, n) == 2 * (2 * fwd + n * 5 * N_CLASSES)


def test_plan_counts_the_grid(capsys):
    config = load_config("config/test.yaml")
    table = plan.plan(config, "a100")
    train = table[table["stage"] == "train"]
    assert train["jobs"].sum() == 6  # 3 algorithms x 2 seeds
    assert (train["minutes_per_job"] > 0).all()
    assert math.isfinite(table["gpu_hours"].sum())
    assert plan.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 990.0
    with pytest.raises(ValueError, match="no bf16"):
        plan.device_for("v100", "bf16", 0.3, 0.0)
    # the held-out variant's runs (analysis.unseen: ff and bp here)
    held = table[table["stage"] == "unseen_train"]
    assert held["jobs"].sum() == 4
    assert main(["plan", "--config", "config/test.yaml", "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    assert "GPU-hours on h100" in out and "training.device is cpu" in out
    # the other jobs, as snakemake -n plans them in the workflow's folder
    others = dict(re.findall(r"^\s*(\w+)\s+(\d+)$", out, re.M))
    assert others["sparsity"] == "6" and others["unseen"] == "4"
    assert others["activation_wall"] == "6" and "train" not in others

    # batched seeds: one job per configuration, doing both seeds' work
    batched = load_config("config/test.yaml", {"training": {"batch_seeds": True}})
    together = plan.plan(batched, "a100")
    seeds = together[together["stage"] == "train_seeds"]
    assert len(seeds) == 3 and (seeds["jobs"] == 1).all()
    assert seeds["tflop_per_job"].sum() == pytest.approx(
        2 * train["tflop_per_job"].sum()
    )
    assert seeds["gpu_hours"].sum() < train["gpu_hours"].sum()
    assert "train" not in set(together["stage"])


def test_a_batched_job_is_sized_for_all_its_seeds():
    config = load_config("config/config.yaml")
    runs = [plan.resolve_run(config, "svhn", "ff", "paper", s) for s in range(10)]
    one, ten = plan.host_memory_mb(runs[:1]), plan.host_memory_mb(runs)
    # two N x 3072 stored inputs of 73,257 images per extra seed, and more
    assert ten - one > 9 * 2 * 73_257 * 3072 * 4 / 2**20
    minutes = plan.job_minutes(runs, "a100")
    assert minutes == pytest.approx(10 * plan.job_minutes(runs[:1], "a100"), rel=0.05)


def test_precision_is_a_validated_training_option():
    config = load_config("config/test.yaml", {"training": {"precision": "bf16"}})
    assert config["training"]["precision"] == "bf16"
    assert load_config("config/test.yaml")["training"]["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision"):
        load_config("config/test.yaml", {"training": {"precision": "fp8"}})


def _separate_and_batched(algorithm, runs, x, y, checkpoint=None):
    """Each seed trained alone, then all of them stacked (from ``checkpoint``
    when one is there): (separate nets, their histories, batched nets, their
    histories, the checkpoint resumed)."""
    from ffrep.batched import train_bp_ff_seeds, train_bp_seeds, train_ff_seeds
    from ffrep.models import build_model
    from ffrep.train import train_bp, train_bp_ff

    overlay = LabelOverlay(DATASETS["fashion_mnist"], float(x.max()))
    info = DATASETS["fashion_mnist"]

    def fresh(run):
        torch.manual_seed(run.seed)
        return build_model(algorithm, info, run)

    def data(run):
        return FFData(x.clone(), y, ALL, run, overlay, torch.device("cpu"))

    separate, histories = [], []
    for run in runs:
        net, gen, ckpt = fresh(run), generator(run.seed, "shuffle"), Checkpoint()
        args = (ckpt, Checkpointer(None, run), gen)
        if algorithm == "bp":
            histories.append(train_bp(net, x, y, run, *args))
        else:
            trainer = train_ff if algorithm == "ff" else train_bp_ff
            histories.append(trainer(net, data(run), run, *args))
        separate.append(net)

    nets = [fresh(run) for run in runs]
    checkpointer = Checkpointer(checkpoint, runs[0], runs[1:], kind="seeds")
    ckpt = checkpointer.load(nets) or Checkpoint()
    if algorithm == "bp":
        batched = train_bp_seeds(nets, x, y, runs, ckpt, checkpointer)
    else:
        trainer = train_ff_seeds if algorithm == "ff" else train_bp_ff_seeds
        batched = trainer(nets, data(runs[0]), runs, ckpt, checkpointer)
    return separate, histories, nets, batched, ckpt


@pytest.mark.parametrize("algorithm", ["ff", "bp_ff", "bp"])
def test_batched_seeds_equal_their_separate_runs(algorithm):
    x, y = small_data()
    runs = [small_run(algorithm, seed=s) for s in (0, 1, 7)]
    separate, histories, nets, batched, _ = _separate_and_batched(algorithm, runs, x, y)
    for net, ref, got, want in zip(nets, separate, batched, histories, strict=True):
        # a single run's products (oneDNN on a CPU) and the batched ones round
        # differently; training carries that to a few 1e-5 on some weights
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=5e-5)
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want))
    # seeds really differ, so the comparison is not between copies
    assert not torch.equal(nets[0].layers[0].weight, nets[1].layers[0].weight)


class Killed(BaseException):
    """Stands for SIGKILL: nothing of the trainer catches it."""


def _kill_after(monkeypatch, module, n_epochs: int) -> None:
    """Kill training as it finishes its ``n_epochs``-th epoch over all layers,
    before that epoch's checkpoint."""
    done = []
    step = module.Progress.step

    def step_then_kill(self, **values):
        step(self, **values)
        done.append(1)
        if len(done) == n_epochs:
            raise Killed

    monkeypatch.setattr(module.Progress, "step", step_then_kill)


def _batched(algorithm, runs, x, y, checkpoint):
    """The seeds ``runs`` trained stacked, from ``checkpoint`` when it is there:
    (nets, histories, the checkpoint resumed)."""
    from ffrep import batched
    from ffrep.models import build_model

    nets = []
    for run in runs:
        torch.manual_seed(run.seed)
        nets.append(build_model(algorithm, DATASETS["fashion_mnist"], run))
    checkpointer = Checkpointer(checkpoint, runs[0], runs[1:], kind="seeds")
    ckpt = checkpointer.load(nets) or Checkpoint()
    if algorithm == "bp":
        history = batched.train_bp_seeds(nets, x, y, runs, ckpt, checkpointer)
    else:
        overlay = LabelOverlay(DATASETS["fashion_mnist"], float(x.max()))
        data = FFData(x.clone(), y, ALL, runs[0], overlay, torch.device("cpu"))
        trainer = {"ff": batched.train_ff_seeds, "bp_ff": batched.train_bp_ff_seeds}
        history = trainer[algorithm](nets, data, runs, ckpt, checkpointer)
    return nets, history, ckpt


@pytest.mark.parametrize(
    "algorithm, kill_after",
    [("ff", 3), ("ff", 6), ("ff", "boundary"), ("bp_ff", 3), ("bp", 3)],
)
def test_killed_batched_seeds_resume_bit_identical(
    algorithm, kill_after, tmp_path, monkeypatch
):
    from ffrep import batched as batched_mod

    x, y = small_data()
    runs = [
        small_run(algorithm, seed=s, epochs=4, checkpoint_every_epochs=2)
        for s in (0, 2)
    ]
    want_nets, want_history, _ = _batched(algorithm, runs, x, y, None)
    checkpoint = tmp_path / "seeds.pt"
    with monkeypatch.context() as mp:
        if kill_after == "boundary":
            # after layer 1's last checkpoint, before layer 2's inputs are built
            mp.setattr(
                batched_mod, "_advance", lambda *a: (_ for _ in ()).throw(Killed)
            )
        else:
            _kill_after(mp, batched_mod, kill_after)
        with pytest.raises(Killed):
            _batched(algorithm, runs, x, y, checkpoint)
    assert checkpoint.exists()
    nets, history, ckpt = _batched(algorithm, runs, x, y, checkpoint)
    assert ckpt.model  # it did resume
    assert history == want_history
    for net, want in zip(nets, want_nets, strict=True):
        for p, q in zip(net.parameters(), want.parameters(), strict=True):
            assert torch.equal(p, q)
    # a checkpoint of other seeds, or of a single run, is not resumed
    assert Checkpointer(checkpoint, runs[0], kind="seeds").load() is None
    assert Checkpointer(checkpoint, runs[0], runs[1:]).load() is None
    # nor one that lost a seed's weights
    payload = torch.load(checkpoint, weights_only=True)
    payload["model"]["seeds"].pop()
    torch.save(payload, checkpoint)
    checkpointer = Checkpointer(checkpoint, runs[0], runs[1:], kind="seeds")
    assert checkpointer.load(nets) is None


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared Fashion-MNIST-shaped file of random images."""
    info = DATASETS["fashion_mnist"]
    gen = torch.Generator().manual_seed(5)
    path = tmp_path_factory.mktemp("data") / "fashion_mnist.pt"
    payload = {
        "x_train": torch.randn(info.n_train, info.n_inputs, generator=gen),
        "y_train": torch.randint(0, N_CLASSES, (info.n_train,), generator=gen),
        "x_test": torch.randn(info.n_test, info.n_inputs, generator=gen),
        "y_test": torch.randint(0, N_CLASSES, (info.n_test,), generator=gen),
        "dataset": "fashion_mnist",
        "mean": [0.0],
        "std": [1.0],
    }
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("algorithm", ["ff", "bp_ff", "bp"])
def test_a_batched_job_writes_what_separate_runs_write(algorithm, prepared, tmp_path):
    import json

    from ffrep.batched import train_seeds
    from ffrep.train import load_model, train_run

    limits = dict(max_train_samples=300, max_test_samples=100, num_threads=1)
    runs = [small_run(algorithm, seed=s, **limits) for s in (0, 4)]
    separate = []
    for run in runs:
        out = tmp_path / "separate" / f"seed{run.seed}"
        separate.append(
            train_run(run, prepared, out / "model.pt", out / "metrics.json")
        )
    out = [tmp_path / "batched" / f"seed{r.seed}" for r in runs]
    checkpoint = tmp_path / "checkpoints" / "seeds.pt"
    batched = train_seeds(
        runs,
        prepared,
        [o / "model.pt" for o in out],
        [o / "metrics.json" for o in out],
        checkpoint,
    )
    # the job's checkpoint goes once every seed's files are written
    assert not checkpoint.exists()
    for run, got, want, folder in zip(runs, batched, separate, out, strict=True):
        assert got["resumed"] is False
        assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=0.02)
        torch.testing.assert_close(
            torch.tensor(got["loss_history"]), torch.tensor(want["loss_history"])
        )
        written = json.loads((folder / "metrics.json").read_text())
        assert written["precision"] == "fp32" and written["train_flops"] > 0
        assert written["batched_seeds"] == [0, 4]
        net, back = load_model(folder / "model.pt")
        ref, _ = load_model(tmp_path / "separate" / f"seed{run.seed}" / "model.pt")
        assert back.seed == run.seed
        # a single run's products (oneDNN on a CPU) and the batched ones round
        # differently; training carries that to a few 1e-5 on some weights
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=5e-5)


def test_batch_seeds_is_validated():
    config = load_config("config/test.yaml", {"training": {"batch_seeds": True}})
    assert config["training"]["batch_seeds"] is True
    with pytest.raises(ValueError, match="batched seeds need fixed negatives"):
        load_config(
            "config/test.yaml",
            {
                "training": {"batch_seeds": True},
                "forward_forward": {"resample_negatives": True},
            },
        )
    with pytest.raises(ValueError, match="ff_deeper_inputs: stored"):
        load_config(
            "config/test.yaml",
            {"training": {"batch_seeds": True, "ff_deeper_inputs": "recomputed"}},
        )
    with pytest.raises(ValueError, match="ff_deeper_inputs"):
        load_config("config/test.yaml", {"training": {"ff_deeper_inputs": "disk"}})
    # neither applies to a grid without the algorithms they concern
    bp_only = {
        "grid": {"algorithms": ["bp"]},
        "training": {"batch_seeds": True, "ff_deeper_inputs": "recomputed"},
        "forward_forward": {"resample_negatives": True},
        "analysis": {"unseen": {"algorithms": ["bp"]}},
    }
    assert load_config("config/test.yaml", bp_only)["training"]["batch_seeds"]


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"seed": 0}, "each seed once"),
        ({"learning_rate": 0.5}, "differs in learning_rate"),
        ({"resample_negatives": True}, "need fixed negatives"),
        ({"ff_deeper_inputs": "recomputed"}, "deeper inputs stored"),
    ],
)
def test_a_batched_job_refuses_what_it_cannot_train(change, fragment, tmp_path):
    from ffrep.batched import train_seeds
    from ffrep.config import ConfigError

    runs = [small_run(seed=0), small_run(seed=1)]
    for run in runs[1:] if "seed" in change or "learning_rate" in change else runs:
        for key, value in change.items():
            setattr(run, key, value)
    with pytest.raises(ConfigError, match=fragment):
        train_seeds(runs, tmp_path / "absent.pt", [None, None], [None, None])


@pytest.mark.parametrize("kind", ["l2_norm", "sum_of_squares", "mean_of_squares"])
def test_relu_goodness_has_the_gradient_of_its_plain_form(kind):
    from ffrep.models import relu_goodness

    x = torch.randn(6, 5, dtype=torch.float64)
    x[0] = -1.0  # an all-zero row after the ReLU
    x.requires_grad_()
    torch.autograd.gradcheck(lambda t: relu_goodness(t, kind), (x,))
    weights = torch.rand(6, dtype=torch.float64)
    fast = torch.autograd.grad((relu_goodness(x, kind) * weights).sum(), x)[0]
    plain = torch.autograd.grad((goodness(x.relu(), kind) * weights).sum(), x)[0]
    torch.testing.assert_close(fast, plain)
    assert torch.equal(fast[0], torch.zeros(5, dtype=torch.float64))


def test_gpu_epochs_are_reported_against_the_cards_peak(monkeypatch):
    assert bench.peak_note(torch.device("cpu"), 1e12, 1.0) == ""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "NVIDIA H100 80GB")
    note = bench.peak_note(torch.device("cuda"), 67e12, 2.0)
    assert "33.5 TFLOP/s, 50% of the NVIDIA H100 80GB's fp32 peak" in note
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "Some Card")
    assert "not in ffrep.plan.GPUS" in bench.peak_note(torch.device("cuda"), 1, 1)


def test_stopped_benchmark_leaves_no_worker_behind():
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    script = (
        "import signal, time\n"
        "from ffrep.bench import _in_fresh_process\n"
        "def stop(signum, frame):\n"
        "    raise SystemExit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "_in_fresh_process(time.sleep, 120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60

        def workers():
            children = psutil.Process(parent.pid).children()
            return [c for c in children if "spawn_main" in " ".join(c.cmdline())]

        while not workers():
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.1)
        (worker,) = workers()
        time.sleep(1.0)  # the worker is running the function
        os.kill(parent.pid, signal.SIGTERM)
        assert parent.wait(timeout=30) == 143
        worker.wait(timeout=30)  # gone, not orphaned
    finally:
        parent.kill()


def test_bench_refuses_bad_arguments():
    for flag in ("--threads", "--rounds"):
        with pytest.raises(SystemExit, match=f"{flag} must be at least 1"):
            main(["bench", "--quick", flag, "0"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device is visible"):
            main(["bench", "--quick", "--device", "cuda"])


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_kernels_agree(monkeypatch, relu, with_bias):
    """oneDNN's fused linear, where torch has it, and the plain product into a
    kept buffer give the same outputs, on strided inputs too."""
    torch.manual_seed(0)
    x = torch.randn(96, 70)[:, ::2]  # (96, 35), rows 70 apart
    weight, bias = torch.randn(50, 35), torch.randn(50) if with_bias else None
    expected = x @ weight.T + (bias if with_bias else 0)
    if relu:
        expected = expected.clamp_min(0)
    fast = kernels.linear(x, weight, bias, relu, torch.empty(96, 50))
    monkeypatch.setattr(kernels, "_ONEDNN_LINEAR", None)
    out = torch.empty(96, 50)
    plain = kernels.linear(x, weight, bias, relu, out)
    assert plain.data_ptr() == out.data_ptr()  # the product went into ``out``
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)


def test_onednn_only_for_fp32_on_the_cpu_outside_autocast_and_autograd():
    if kernels._ONEDNN_LINEAR is None:
        pytest.skip("this torch has no oneDNN linear")
    x, weight = torch.randn(4, 3), torch.randn(5, 3, requires_grad=True)
    assert kernels.uses_onednn(x)
    assert not kernels.uses_onednn(x.double())
    assert not kernels.uses_onednn(torch.randn(4, 0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not kernels.uses_onednn(x)
    # oneDNN's linear has no backward: a tracked product stays on torch.mm
    assert not kernels.uses_onednn(x, weight)
    kernels.linear(x, weight, None, True).sum().backward()
    torch.testing.assert_close(weight.grad, (x @ weight.T > 0).float().T @ x)
    with torch.no_grad():
        assert kernels.uses_onednn(x, weight)


@pytest.mark.parametrize("onednn", [True, False])
def test_linear_keeps_nans_and_reads_any_bias(monkeypatch, onednn):
    """A NaN weight gives NaN outputs through the ReLU (a diverging run must
    show it), and a strided bias is read as its values."""
    if not onednn:
        monkeypatch.setattr(kernels, "_ONEDNN_LINEAR", None)
    x, weight = torch.randn(8, 6), torch.randn(4, 6)
    bias = torch.randn(4, 2)[:, 1]  # every other value of its storage
    expected = (x @ weight.T + bias).clamp_min(0)
    torch.testing.assert_close(kernels.linear(x, weight, bias, True), expected)
    weight[2, 0] = float("nan")
    assert kernels.linear(x, weight, bias, True)[:, 2].isnan().all()


@pytest.mark.parametrize("sampling", ["paper", "uniform"])
def test_a_nan_weight_gives_the_hand_computed_step_a_nan_loss(sampling):
    """A diverged layer's NaN reaches the loss, which stops the training."""
    from ffrep.ffstep import FFStep
    from ffrep.train import adam

    run = small_run(negative_sampling=sampling)
    x, y = small_data()
    overlay = LabelOverlay(DATASETS["fashion_mnist"], float(x.max()))
    ffdata = FFData(x.clone(), y, ALL, run, overlay, torch.device("cpu"))
    layer = torch.nn.Linear(x.shape[1], 12)
    step = FFStep(layer, adam(layer.parameters(), run, torch.device("cpu")), run)
    idx = torch.arange(32)
    assert step(ffdata.batches(*ffdata.fixed), idx).isfinite()
    with torch.no_grad():
        layer.weight[0, 300] = float("nan")
    assert step(ffdata.batches(*ffdata.fixed), idx).isnan()
