"""DINO task: multi-crop determinism, EMA teacher, frozen last layer, kNN, state round trip, data splits."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from waypoint.data.images import Digits
from waypoint.tasks.base import StepContext
from waypoint.tasks.dino import DinoTask
from waypoint.tasks.dino.aug import ANGLE, BLUR, DRAWS_PER_CROP, JITTER, CropSpec, multi_crop
from waypoint.tasks.dino.model import knn_top1, linear_probe_top1


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits(max_items=64)


def make(digits: Digits, **kw) -> DinoTask:
    task = DinoTask(digits, seed=0, scale="smoke", **kw)
    task.setup(total_steps=20, steps_per_epoch=4, device=torch.device("cpu"))
    return task


def batch_of(task: DinoTask, epoch: int = 0, n: int = 8) -> dict:
    ds = task.train_dataset()
    return task.collate([ds[(epoch, i)] for i in range(n)])


def step(task: DinoTask, batch: dict, ctx: StepContext) -> float:
    opt = task.optimizers()[0]
    opt.zero_grad()
    loss, _ = task.training_step(batch, ctx)
    loss.backward()
    task.before_optimizer_step(ctx)
    opt.step()
    task.after_optimizer_step(ctx)
    return float(loss.detach())


def crops_of(task: DinoTask, *keys: tuple[int, int]) -> dict:
    ds = task.train_dataset()
    return task.collate([ds[key] for key in keys])


def test_crops_are_a_function_of_seed_epoch_and_index(digits: Digits) -> None:
    task = make(digits)
    a, b, c, d = (crops_of(task, key) for key in ((1, 3), (1, 3), (1, 4), (2, 3)))
    assert a["global"].shape == (1, 2, 1, 32, 32) and a["local"].shape == (1, 2, 1, 16, 16)
    assert torch.equal(a["global"], b["global"]) and torch.equal(a["local"], b["local"])
    assert not torch.equal(a["global"], c["global"]) and not torch.equal(a["global"], d["global"])


def test_an_items_crops_do_not_depend_on_the_batch_it_is_in(digits: Digits) -> None:
    task = make(digits)
    alone = crops_of(task, (1, 3))
    among = crops_of(task, (1, 0), (1, 3), (1, 7))
    for key in ("global", "local"):
        torch.testing.assert_close(among[key][1], alone[key][0], rtol=0, atol=1e-6)


def test_a_rotated_crop_of_the_whole_image_keeps_its_ink_near_the_centre(digits: Digits) -> None:
    spec = CropSpec(32, 16, 0, (1.0, 1.0), (0.5, 0.5), rotate_deg=90.0)
    image = torch.zeros(1, 1, 32, 32)
    image[..., 14:18, 4:28] = 1.0  # a horizontal bar through the centre
    draws = torch.full((1, 2, DRAWS_PER_CROP), 0.5)
    draws[0, :, JITTER] = draws[0, :, BLUR] = 1.0  # no jitter, no blur
    draws[0, 1, ANGLE] = 1.0  # +90 degrees: the bar stands upright
    still, turned = multi_crop(image, draws, spec)["global"][0, :, 0]
    assert still[15, 6] > 1.0 and still[6, 15] == 0.0
    assert turned[6, 15] > 1.0 and turned[15, 6] == 0.0


def test_the_teacher_is_an_ema_of_the_student(digits: Digits) -> None:
    task = make(digits)
    before = [p.detach().clone() for p in task.teacher.parameters()]
    step(task, batch_of(task), StepContext(0, 1, 20, 4, torch.device("cpu")))
    moved = [float((t - b).abs().max()) for t, b in zip(task.teacher.parameters(), before)]
    gap = [float((t - s).detach().abs().max()) for t, s in zip(task.teacher.parameters(), task.student.parameters())]
    assert max(moved) > 0 and max(gap) > 0
    assert max(moved) < max(gap)  # the teacher moved only a small fraction of the way


def test_the_last_layer_does_not_learn_in_the_first_epoch(digits: Digits) -> None:
    task = make(digits)
    last = task.student.head.last_layer.parametrizations.weight.original1
    before = last.detach().clone()
    step(task, batch_of(task), StepContext(0, 0, 20, 4, torch.device("cpu")))
    assert torch.equal(last, before)
    step(task, batch_of(task, 1), StepContext(4, 1, 20, 4, torch.device("cpu")))
    assert not torch.equal(last, before)


def test_a_restored_state_gives_the_same_next_step(digits: Digits) -> None:
    a = make(digits)
    step(a, batch_of(a), StepContext(0, 1, 20, 4, torch.device("cpu")))
    b = make(digits)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # the store hands back fresh tensors, never a's own
    batch, ctx = batch_of(a, 2), StepContext(1, 1, 20, 4, torch.device("cpu"))
    torch.manual_seed(5)
    la = step(a, batch, ctx)
    torch.manual_seed(5)
    lb = step(b, batch, ctx)
    assert la == lb and torch.equal(a.center, b.center)
    assert all(torch.equal(x, y) for x, y in zip(a.teacher.parameters(), b.teacher.parameters()))


def test_knn_votes_with_the_nearest_labelled_features() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    assert knn_top1(bank, labels, torch.tensor([[1.0, 0.05], [0.05, 1.0]]), torch.tensor([0, 1]), k=2) == 1.0


def test_the_linear_probe_reads_a_direction_that_cosine_neighbours_miss() -> None:
    gen = torch.Generator().manual_seed(0)

    def points(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % 2
        signal = (2 * labels - 1).float() * 0.1  # the class: a small offset along one axis
        noise = torch.randn(n, 16, generator=gen) * 10.0  # a large nuisance along 16 others
        return torch.cat([signal.unsqueeze(1), noise], dim=1), labels

    (bank, bank_labels), (queries, labels) = points(200), points(100)
    assert knn_top1(bank, bank_labels, queries, labels, k=5) < 0.8
    assert linear_probe_top1(bank, bank_labels, queries, labels, 2) == 1.0


def test_the_linear_probe_is_a_function_of_its_inputs_and_seed(digits: Digits) -> None:
    args = (digits.train_images.flatten(1), digits.train_labels, digits.val_images.flatten(1), digits.val_labels, 10)
    assert linear_probe_top1(*args, iters=20, seed=3) == linear_probe_top1(*args, iters=20, seed=3)


def test_validation_reports_the_monitored_metric(digits: Digits) -> None:
    task = make(digits)
    loader = torch.utils.data.DataLoader(task.val_dataset(), batch_size=8, collate_fn=task.collate)
    acc = task.validate(loader, StepContext(0, 0, 20, 4, torch.device("cpu")))[task.monitor]
    assert 0.0 <= acc <= 1.0


def test_an_unknown_option_is_named(digits: Digits) -> None:
    with pytest.raises(ValueError, match="embed_dimm"):
        DinoTask(digits, seed=0, embed_dimm=8)


@pytest.mark.parametrize(
    "option, message",
    [
        ({"embed_dim": 30, "num_heads": 4}, "model.embed_dim 30 must be divisible by model.num_heads 4"),
        ({"depth": 0}, "model.depth must be at least 1"),
        ({"arch": "vit_tinyy"}, "model.arch 'vit_tinyy' is not a timm architecture"),
        ({"local_scale": [0.5, 0.1]}, r"model.local_scale must be two area fractions"),
        ({"global_scale": [0.0, 1.0]}, r"model.global_scale must be two area fractions"),
    ],
)
def test_an_impossible_size_or_range_is_one_clear_sentence(digits: Digits, option: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DinoTask(digits, seed=0, **option)


def test_a_weights_only_state_holds_student_teacher_and_center_but_no_optimizer(digits: Digits) -> None:
    a = make(digits)
    step(a, batch_of(a), StepContext(0, 1, 20, 4, torch.device("cpu")))
    state = copy.deepcopy(a.state_dict(optimizer=False))
    assert set(state) == {"student", "teacher", "center", "collapse"}
    b = make(digits)
    b.load_state_dict(state)
    assert torch.equal(a.center, b.center)
    assert all(torch.equal(x, y) for x, y in zip(a.teacher.parameters(), b.teacher.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(a.student.parameters(), b.student.parameters()))
    assert not b.optimizers()[0].state  # the optimizer starts afresh


def val_loader(task: DinoTask) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(task.val_dataset(), batch_size=8, collate_fn=task.collate)


def test_the_first_validation_reports_raw_pixel_and_untrained_baselines(digits: Digits) -> None:
    task = make(digits)
    first = task.validate(val_loader(task), StepContext(0, 0, 20, 4, torch.device("cpu")))
    raw = knn_top1(
        digits.train_images.flatten(1),
        digits.train_labels,
        digits.val_images.flatten(1),
        digits.val_labels,
        task.cfg.knn_k,
        task.cfg.knn_temperature,
        10,
    )
    assert first["val/knn_top1_raw_pixels"] == pytest.approx(raw, abs=1e-6)
    assert first["val/knn_top1_untrained"] == first["val/knn_top1"]
    raw_linear = linear_probe_top1(
        digits.train_images.flatten(1), digits.train_labels, digits.val_images.flatten(1), digits.val_labels, 10, 20, seed=0
    )
    assert first["val/linear_top1_raw_pixels"] == pytest.approx(raw_linear, abs=1e-6)
    assert first["val/linear_top1_untrained"] == first["val/linear_top1"]
    later = task.validate(val_loader(task), StepContext(4, 1, 20, 4, torch.device("cpu")))
    assert set(later) == {"val/knn_top1", "val/linear_top1"}


def test_the_untrained_baseline_is_the_initial_network_even_after_training(digits: Digits) -> None:
    fresh = make(digits)
    at_start = fresh.validate(val_loader(fresh), StepContext(0, 0, 20, 4, torch.device("cpu")))["val/knn_top1"]
    trained = make(digits)
    step(trained, batch_of(trained), StepContext(0, 1, 20, 4, torch.device("cpu")))
    figures = trained.validate(val_loader(trained), StepContext(1, 1, 20, 4, torch.device("cpu")))
    assert figures["val/knn_top1_untrained"] == at_start


def test_a_uniform_teacher_is_reported_as_collapse(digits: Digits, caplog: pytest.LogCaptureFixture) -> None:
    task = make(digits, warmup_teacher_temp=1e3, teacher_temp=1e3, collapse_patience=2)  # a temperature this hot is uniform
    task.student.train()
    with caplog.at_level("WARNING", logger="waypoint.tasks.dino"):
        for i in range(3):
            _, logs = task.training_step(batch_of(task, i), StepContext(i, 1, 20, 4, torch.device("cpu")))
    assert logs["train/teacher_entropy"] == pytest.approx(math.log(task.size["out_dim"]), rel=1e-3)
    assert logs["train/teacher_batch_entropy"] == pytest.approx(math.log(task.size["out_dim"]), rel=1e-3)
    assert "train/kl_teacher_student" in logs
    warnings = [r for r in caplog.records if "collapse (uniform)" in r.getMessage()]
    assert len(warnings) == 1 and "step 2" in warnings[0].getMessage()


def test_cls_with_pooled_patch_tokens_doubles_the_feature(digits: Digits) -> None:
    cls, both = make(digits), make(digits, knn_feature="cls+avg")
    images = digits.val_images[:4] / 0.3
    assert both.features(images).shape[1] == 2 * cls.features(images).shape[1]


def test_the_linear_probe_draws_nothing_from_the_global_rng():
    from waypoint.tasks.dino.model import linear_probe_top1

    x, y = torch.randn(60, 8), torch.arange(60) % 3
    before = torch.get_rng_state()
    linear_probe_top1(x, y, x[:6], y[:6], 3, iters=3)
    assert torch.equal(before, torch.get_rng_state())  # validation must not move training's random stream
