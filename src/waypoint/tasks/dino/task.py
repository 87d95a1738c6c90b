"""DINO: self-distillation with no labels, at small scale (Caron et al., 2021).

A student ViT sees 2 global and several local crops; a teacher (EMA of the student) sees the global ones; the
student matches the teacher's centred, sharpened outputs. Every schedule is a pure function of the step, so the
state is ``student/{backbone,head}``, ``teacher/{backbone,head}``, ``optimizer``, ``center`` and ``collapse``.
Validation: kNN top-1 (``val/knn_top1``) and linear-probe top-1 (``val/linear_top1``) of teacher features, the
training split as the bank; the first validation also scores raw pixels and the untrained network. Each step
logs the teacher's entropies and KL(teacher || student); a ``CollapseDetector`` warns when the entropy is pinned.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import timm
import torch

from waypoint.data.images import DigitsConfig, ImageFolderConfig
from waypoint.tasks.base import StepContext
from waypoint.tasks.common import check_options, cosine, preset_sizes, sample_generator
from waypoint.tasks.dino.aug import CropSpec, EvalImages, MultiCropCollate, MultiCropImages, normalise
from waypoint.tasks.dino.collapse import CollapseDetector
from waypoint.tasks.dino.model import (
    DINOHead,
    StudentTeacherNet,
    build_backbone,
    dino_loss,
    knn_top1,
    linear_probe_top1,
    param_groups,
    sincos_pos_embed,
)

log = logging.getLogger(__name__)

KNN_FEATURES = ("cls", "cls+avg")

POS_EMBED_INITS = ("sincos", "trunc_normal")

PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "embed_dim": 32,
        "depth": 3,
        "num_heads": 2,
        "patch_size": 4,
        "out_dim": 256,
        "hidden_dim": 256,
        "bottleneck_dim": 64,
        "n_local_crops": 4,
        "linear_probe_iters": 100,
    },
    "smoke": {
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "patch_size": 4,
        "out_dim": 256,
        "hidden_dim": 64,
        "bottleneck_dim": 32,
        "n_local_crops": 2,
        "linear_probe_iters": 20,
    },
    # upstream DINO ViT-S/16: 21.7M backbone, head 2048-2048-256 + weight-normalised 65536-way last layer,
    # 10 local crops (the paper's best multi-crop); with experiment=dino_paper for the rest of the recipe
    "paper": {
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
        "patch_size": 16,
        "out_dim": 65536,
        "hidden_dim": 2048,
        "bottleneck_dim": 256,
        "n_local_crops": 10,
        "linear_probe_iters": 100,
    },
}


@dataclass
class DinoConfig:
    """Hydra schema of ``model=dino``; size fields left None come from ``scale``.

    Defaults are tuned for ~900 steps on 32x32 upscaled digits (see the README's DINO section for why each
    differs from upstream): BatchNorm in the head, sine-cosine starting position codes, no flip or
    solarization, larger local crops, teacher momentum 0.99, teacher temperature 0.04, AdamW at 5e-3.
    """

    _target_: str = "waypoint.tasks.dino.DinoTask"
    scale: str = "default"
    arch: str = "vit_tiny_patch16_224"  # timm architecture; the sizes below override its defaults
    patch_size: Optional[int] = None
    local_size: Optional[int] = None  # side of the local crops in pixels; None = half the image (upstream: 96 for 224)
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    drop_path_rate: float = 0.0
    pos_embed_init: str = "sincos"  # starting value of the (learnable) position embedding; "trunc_normal" is upstream's std 0.02
    out_dim: Optional[int] = None
    hidden_dim: Optional[int] = None
    bottleneck_dim: Optional[int] = None
    n_local_crops: Optional[int] = None
    use_bn_in_head: bool = True  # BatchNorm in the head MLP (an upstream option); the teacher then uses batch statistics
    global_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.25, 0.6])
    flip_p: float = 0.0  # horizontal flips (upstream 0.5) turn digits into other shapes
    solarize_p: float = 0.0  # solarization of the second global crop (upstream 0.2)
    rotate_deg: float = 0.0  # each crop turns by a uniform angle in [-rotate_deg, rotate_deg] degrees (upstream: none)
    lr: float = 5e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.04
    momentum_teacher: float = 0.99
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 0.0
    center_momentum: float = 0.9
    freeze_last_layer: int = 1  # epochs during which the head's last layer does not learn
    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_probe_iters: Optional[int] = None  # L-BFGS iterations per fit of the linear probe (val/linear_top1); 0: none
    knn_feature: str = "cls"  # teacher feature for kNN: "cls", or "cls+avg" (CLS with average-pooled patch tokens, as DINOv2)
    collapse_patience: int = 50  # warn after this many consecutive collapsed steps (0: never)
    collapse_tolerance: float = 0.01  # fraction of ln(K): entropy above (1 - tol) ln K is uniform, below tol ln K one-prototype


def _check_sizes(size: Mapping[str, int]) -> None:
    """Refuse widths the backbone cannot build, naming the option."""
    for key, value in size.items():
        low = 0 if key in ("n_local_crops", "linear_probe_iters") else 1
        if value < low:
            raise ValueError(f"model.{key} must be at least {low}, got {value}")
    if size["embed_dim"] % size["num_heads"]:
        raise ValueError(f"model.embed_dim {size['embed_dim']} must be divisible by model.num_heads {size['num_heads']}")


def _check_range(name: str, value: Any) -> tuple[float, float]:
    """A crop scale range ``[low, high]`` of area fractions, or one clear error naming ``model.<name>``."""
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not 0.0 < pair[0] <= pair[1] <= 1.0:
        raise ValueError(f"model.{name} must be two area fractions [low, high] with 0 < low <= high <= 1, got {list(value)}")
    return pair  # type: ignore[return-value]


#: foreign checkpoint keys (seed docs, upstream main_dino.py) -> this task's init_targets names
_FOREIGN_KEYS = (
    ("student_state_dict", "student"),
    ("teacher_state_dict", "teacher"),
    ("dino_loss_center", "center"),
    ("dino_loss.center", "center"),
    ("loss_state_dict.center", "center"),
    ("loss.center", "center"),
)


class DinoTask:
    """The DINO family behind the Task contract (``waypoint.tasks.base.Task``)."""

    monitor = "val/knn_top1"
    monitor_mode = "max"

    def __init__(self, data: Any, seed: int = 0, **config: Any) -> None:
        check_options(DinoConfig, config, "dino")
        self.cfg = DinoConfig(**{k: (list(v) if k.endswith("_scale") else v) for k, v in config.items()})
        size = preset_sizes(PRESETS, self.cfg.scale, vars(self.cfg))
        self.size = {k: int(v) for k, v in size.items()}
        _check_sizes(self.size)
        if not timm.is_model(self.cfg.arch):
            raise ValueError(f"model.arch '{self.cfg.arch}' is not a timm architecture; use a ViT such as vit_tiny_patch16_224")
        if getattr(data, "kind", None) != "images":
            raise ValueError(f"model=dino needs image data (data=digits or data=imagefolder), got {type(data).__name__}")
        img = int(data.train_images.shape[-1])
        patch, local = self.size["patch_size"], int(self.cfg.local_size or img // 2)
        if img % patch or local % patch or not 0 < local <= img:
            raise ValueError(
                f"data.image_size {img} and the local crop size {local} (model.local_size, default half the image) "
                f"must be divisible by model.patch_size {patch}, with local <= image"
            )
        self.data, self.seed = data, int(seed)
        self.crops = CropSpec(
            img,
            local,
            self.size["n_local_crops"],
            _check_range("global_scale", self.cfg.global_scale),
            _check_range("local_scale", self.cfg.local_scale),
            float(self.cfg.flip_p),
            float(self.cfg.solarize_p),
            float(self.cfg.rotate_deg),
        )
        if not 0.0 <= self.crops.rotate_deg <= 180.0:
            raise ValueError(f"model.rotate_deg must be an angle in degrees between 0 and 180, got {self.cfg.rotate_deg}")
        self.collate = MultiCropCollate(self.crops)
        self.student: Optional[StudentTeacherNet] = None
        self.train_student: Optional[torch.nn.Module] = None  # the student, or its DDP wrapper under torchrun
        self.runtime: Any = None
        self.teacher: Optional[StudentTeacherNet] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.center = torch.zeros(1, self.size["out_dim"])
        if self.cfg.pos_embed_init not in POS_EMBED_INITS:
            raise ValueError(f"model.pos_embed_init must be one of {list(POS_EMBED_INITS)}, got '{self.cfg.pos_embed_init}'")
        if self.cfg.knn_feature not in KNN_FEATURES:
            raise ValueError(f"model.knn_feature must be one of {list(KNN_FEATURES)}, got '{self.cfg.knn_feature}'")
        self.collapse = CollapseDetector(
            self.size["out_dim"], int(self.cfg.collapse_patience), float(self.cfg.collapse_tolerance)
        )
        self.baselines_logged = False
        self.baseline_values: dict[str, float] = {}
        self.total_steps, self.steps_per_epoch, self.device = 1, 1, torch.device("cpu")

    # -- data ---------------------------------------------------------------------------------------
    def train_dataset(self) -> torch.utils.data.Dataset:
        """Training images with their random draws; ``__getitem__`` takes ``(epoch, index)``; ``collate`` crops them."""
        return MultiCropImages(self.data.train_images, self.seed, self.crops)

    def val_dataset(self) -> torch.utils.data.Dataset | None:
        """Held-out images with labels (queries of the kNN evaluation)."""
        return EvalImages(self.data.val_images, self.data.val_labels)

    # -- modules ------------------------------------------------------------------------------------
    def backbone_kwargs(self) -> dict[str, Any]:
        """``timm.create_model(arch, pretrained=False, **kwargs)`` arguments that rebuild the backbone."""
        return {
            "img_size": self.crops.global_size,
            "in_chans": int(self.data.channels),
            "patch_size": self.size["patch_size"],
            "embed_dim": self.size["embed_dim"],
            "depth": self.size["depth"],
            "num_heads": self.size["num_heads"],
        }

    def _net(self, drop_path: float) -> StudentTeacherNet:
        backbone = build_backbone(self.cfg.arch, drop_path_rate=drop_path, **self.backbone_kwargs())
        if self.cfg.pos_embed_init == "sincos":  # learnable still; only the starting point changes
            grid = self.crops.global_size // self.size["patch_size"]
            with torch.no_grad():
                backbone.pos_embed.copy_(
                    sincos_pos_embed(self.size["embed_dim"], grid, backbone.pos_embed.shape[1] - grid * grid)
                )
        s = self.size
        head = DINOHead(s["embed_dim"], s["out_dim"], s["hidden_dim"], s["bottleneck_dim"], use_bn=self.cfg.use_bn_in_head)
        return StudentTeacherNet(backbone, head)

    def _fresh_net(self, drop_path: float = 0.0) -> StudentTeacherNet:
        """The network as initialised (a function of ``seed`` only), on the task's device."""
        init_seed = int(torch.randint(0, 2**62, (), generator=sample_generator(self.seed, "dino-init")))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return self._net(drop_path).to(self.device).eval()

    def setup(self, total_steps: int, steps_per_epoch: int, device: torch.device, runtime: Any = None) -> None:
        """Build student and teacher (same initial weights, from ``seed`` only) and AdamW; under torchrun the
        student trains through ``runtime.wrap`` and the centre is the mean teacher output of the global batch."""
        self.total_steps, self.steps_per_epoch = max(1, int(total_steps)), max(1, int(steps_per_epoch))
        self.device = torch.device(device)
        student = self._fresh_net(self.cfg.drop_path_rate)
        teacher = self._net(0.0)
        teacher.load_state_dict(student.state_dict())
        for p in teacher.parameters():
            p.requires_grad = False
        self.student, self.teacher = student.to(self.device), teacher.to(self.device).eval()
        self.optimizer = torch.optim.AdamW(param_groups(self.student), lr=self.cfg.lr)
        self.runtime = runtime
        self.train_student = runtime.wrap(self.student) if runtime is not None else self.student
        if runtime is not None and runtime.shards_parameters:  # sharded like the student, so the EMA is shard-wise
            runtime.wrap(self.teacher)
        self.center = self.center.to(self.device)

    def _nets(self) -> tuple[StudentTeacherNet, StudentTeacherNet, torch.optim.Optimizer]:
        if self.student is None or self.teacher is None or self.optimizer is None:
            raise RuntimeError("DinoTask.setup() must run before training or restoring")
        return self.student, self.teacher, self.optimizer

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The student's AdamW."""
        return [self._nets()[2]]

    # -- schedules ----------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup_epochs``, then cosine down to ``min_lr``."""
        warmup = int(self.cfg.warmup_epochs * self.steps_per_epoch)
        if step < warmup:
            return self.cfg.lr * (step + 1) / warmup
        return cosine(self.cfg.lr, self.cfg.min_lr, step - warmup, self.total_steps - warmup)

    def teacher_temp_at(self, step: int) -> float:
        """Linear warm-up of the teacher temperature, then constant."""
        warm = self.cfg.warmup_teacher_temp_epochs * self.steps_per_epoch
        if step >= warm:
            return self.cfg.teacher_temp
        return self.cfg.warmup_teacher_temp + (self.cfg.teacher_temp - self.cfg.warmup_teacher_temp) * step / warm

    # -- hooks --------------------------------------------------------------------------------------
    def training_step(self, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Teacher on the global crops, student on all crops; DINO loss; update the center."""
        student, teacher, _ = self._nets()
        student.train()
        glob = batch["global"].to(self.device).transpose(0, 1).flatten(0, 1)  # crop-major, as upstream
        loc = batch["local"].to(self.device).transpose(0, 1).flatten(0, 1)
        teacher.head.train(self.cfg.use_bn_in_head)  # as upstream: with BN the teacher normalises by batch statistics
        with torch.no_grad():
            t_out = teacher([glob]).float()
        teacher.head.eval()
        s_out = (self.train_student if self.train_student is not None else student)([glob, loc]).float()
        temp = self.teacher_temp_at(ctx.step)
        loss = dino_loss(s_out, t_out, self.center, 2 + self.crops.n_local, self.cfg.student_temp, temp)
        with torch.no_grad():
            # the targets this step used (centre before its update), and the student on the same global views
            probs = torch.softmax((t_out - self.center) / temp, dim=-1)
            log_probs = torch.log_softmax((t_out - self.center) / temp, dim=-1)
            s_glob = torch.log_softmax(s_out[: len(t_out)] / self.cfg.student_temp, dim=-1)
            entropy = float(-(probs * log_probs).sum(-1).mean())
            mean_probs = probs.mean(0)  # how the batch spreads over the prototypes: 0 when all go to one
            batch_entropy = float(-(mean_probs * mean_probs.clamp_min(1e-30).log()).sum())
            kl = float((probs * (log_probs - s_glob)).sum(-1).mean())
            batch_center = t_out.mean(0, keepdim=True)
            if self.runtime is not None:  # as upstream: the centre follows the whole (global) batch
                self.runtime.mean_(batch_center)
            self.center.mul_(self.cfg.center_momentum).add_(batch_center, alpha=1 - self.cfg.center_momentum)
        warning = self.collapse.update(entropy, ctx.step + 1)
        if warning:
            log.warning(warning)
        return loss, {
            "train/loss": float(loss.detach()),
            "train/teacher_temp": temp,
            "train/teacher_entropy": entropy,
            "train/teacher_batch_entropy": batch_entropy,
            "train/kl_teacher_student": kl,
            "train/collapsed": float(self.collapse.collapsed),
        }

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Set lr and weight decay for this step; keep the last layer still during the first epochs."""
        student, _, opt = self._nets()
        lr = self.lr_at(ctx.step)
        wd = cosine(self.cfg.weight_decay, self.cfg.weight_decay_end, ctx.step, self.total_steps)
        opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"] = lr, wd
        opt.param_groups[1]["lr"] = lr
        if ctx.epoch < self.cfg.freeze_last_layer:
            for p in student.head.last_layer.parameters():
                p.grad = None

    @torch.no_grad()
    def after_optimizer_step(self, ctx: StepContext) -> None:
        """teacher = m * teacher + (1 - m) * student, m on a cosine schedule towards 1."""
        student, teacher, _ = self._nets()
        m = cosine(self.cfg.momentum_teacher, 1.0, ctx.step, self.total_steps)
        for ps, pt in zip(student.parameters(), teacher.parameters()):
            pt.mul_(m).add_(ps.detach(), alpha=1 - m)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 256, net: Optional[StudentTeacherNet] = None) -> torch.Tensor:
        """Teacher features of normalised images: the CLS token, or CLS with average-pooled patch tokens (``knn_feature``)."""
        backbone = (net or self._nets()[1]).backbone
        out = []
        for i in range(0, len(images), batch):
            tokens = backbone.forward_features(images[i : i + batch].to(self.device))
            cls = tokens[:, 0]
            if self.cfg.knn_feature == "cls+avg":
                cls = torch.cat([cls, tokens[:, getattr(backbone, "num_prefix_tokens", 1) :].mean(1)], dim=1)
            out.append(cls.float().cpu())
        return torch.cat(out)

    def _scores(self, bank: torch.Tensor, queries: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """``knn_top1`` and (unless ``linear_probe_iters`` is 0) ``linear_top1`` of features, the training split as
        the bank (or the probe's training set) and the held-out images as queries."""
        train_labels, n_classes = self.data.train_labels, len(self.data.classes)
        out = {"knn_top1": knn_top1(bank, train_labels, queries, labels, self.cfg.knn_k, self.cfg.knn_temperature, n_classes)}
        if self.size["linear_probe_iters"]:
            out["linear_top1"] = linear_probe_top1(
                bank, train_labels, queries, labels, n_classes, self.size["linear_probe_iters"]
            )
        return out

    def baselines(
        self, queries: torch.Tensor, labels: torch.Tensor, untrained: Optional[dict[str, float]] = None
    ) -> dict[str, float]:
        """kNN and linear probe on raw pixels and on the untrained network's features, same settings and split
        (``untrained``: the figures already measured when the validated network is the untrained one)."""
        bank_images = normalise(self.data.train_images)
        raw = self._scores(bank_images.flatten(1), queries.flatten(1), labels)
        if untrained is None:
            fresh = self._fresh_net()
            untrained = self._scores(self.features(bank_images, net=fresh), self.features(queries, net=fresh), labels)
        out = {f"val/{k}_raw_pixels": v for k, v in raw.items()}
        out.update({f"val/{k}_untrained": v for k, v in untrained.items()})
        return out

    @torch.no_grad()
    def validate(self, batches: Any, ctx: StepContext) -> dict[str, float]:
        """kNN and linear-probe top-1 of teacher features (training images as the bank, held-out ones as queries);
        the first validation of a fresh run also reports the baselines under their own keys."""
        feats, labels, images = [], [], []
        for batch in batches:
            feats.append(self.features(batch["image"]))
            labels.append(batch["label"])
            images.append(batch["image"])
        if not feats:
            raise ValueError("validation received no batches; check data.val_fraction and data.max_items")
        bank = self.features(normalise(self.data.train_images))
        scores = self._scores(bank, torch.cat(feats), torch.cat(labels))
        out = {f"val/{k}": v for k, v in scores.items()}
        if not self.baselines_logged:
            self.baselines_logged = True
            self.baseline_values = self.baselines(torch.cat(images), torch.cat(labels), scores if ctx.step == 0 else None)
            out.update(self.baseline_values)
        if ctx.step >= ctx.total_steps:
            base = self.baseline_values or self.baselines(torch.cat(images), torch.cat(labels))
            for key, what in (
                ("knn_top1", f"kNN top-1 (k={self.cfg.knn_k}, {self.cfg.knn_feature} feature)"),
                ("linear_top1", "linear-probe top-1"),
            ):
                if key in scores:
                    raw, untrained = base[f"val/{key}_raw_pixels"], base[f"val/{key}_untrained"]
                    msg = "%s of the teacher at step %d: %.4f; raw pixels %.4f, untrained network %.4f"
                    log.info(msg, what, ctx.step, scores[key], raw, untrained)
        return out

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self, optimizer: bool = True) -> dict[str, Any]:
        """Student and teacher (backbone, head), AdamW (unless ``optimizer=False``) and the loss center."""
        student, teacher, opt = self._nets()
        state = {
            "student": {"backbone": student.backbone.state_dict(), "head": student.head.state_dict()},
            "teacher": {"backbone": teacher.backbone.state_dict(), "head": teacher.head.state_dict()},
            "center": self.center,
            "collapse": torch.tensor(self.collapse.state(), dtype=torch.int64),
        }
        if optimizer:
            state["optimizer"] = opt.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` saved (a weights-only state keeps a fresh optimizer)."""
        missing = [k for k in ("student", "teacher", "center") if k not in state]
        if missing:
            raise ValueError(f"this is not a DINO state: it lacks {missing}")
        student, teacher, opt = self._nets()
        try:
            for net, part in ((student, state["student"]), (teacher, state["teacher"])):
                net.backbone.load_state_dict(dict(part["backbone"]))
                net.head.load_state_dict(dict(part["head"]))
        except RuntimeError as exc:
            raise ValueError(
                f"the saved DINO weights do not fit this model's sizes {self.size}: {str(exc).splitlines()[0]}"
            ) from None
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
        self.center = state["center"].to(self.device).clone()
        if "collapse" in state:  # states saved before collapse detection lack it
            self.collapse.load(state["collapse"].tolist())
        self.baselines_logged = True  # the run that saved this state reported them at its first validation

    # -- init_from (waypoint.training.init_from) -----------------------------------------------------
    def init_targets(self) -> dict[str, torch.Tensor]:
        """The live tensors a start from weights may overwrite: student/teacher backbone and head, the center."""
        student, teacher, _ = self._nets()
        out = {
            f"{name}.{part}.{k}": v
            for name, net in (("student", student), ("teacher", teacher))
            for part, mod in (("backbone", net.backbone), ("head", net.head))
            for k, v in mod.state_dict().items()
        }
        out["center"] = self.center
        return out

    @staticmethod
    def init_key(key: str) -> str:
        """Foreign DINO layouts in this task's names: the seed docs' ``student_state_dict``/``teacher_state_dict``/
        ``dino_loss_center``, upstream's ``dino_loss.center`` and old-style weight norm (``weight_g``/``weight_v``)."""
        for old, new in _FOREIGN_KEYS:
            if key == old or key.startswith(old + "."):
                key = new + key[len(old) :]
                break
        return key.replace("last_layer.weight_g", "last_layer.parametrizations.weight.original0").replace(
            "last_layer.weight_v", "last_layer.parametrizations.weight.original1"
        )

    def after_init_from(self, loaded: set[str]) -> set[str]:
        """A source without a teacher starts the teacher as a copy of the student, as DINO itself does; returns
        the keys filled that way."""
        student, teacher, _ = self._nets()
        if any(k.startswith("teacher.") for k in loaded) or not any(k.startswith("student.") for k in loaded):
            return set()
        teacher.load_state_dict(student.state_dict())
        return {k for k in self.init_targets() if k.startswith("teacher.")}

    def parameter_groups(self) -> dict[str, list[str]]:
        """``student`` and ``teacher`` keys (paired by the analysis for the student-teacher distance)."""
        student, teacher, _ = self._nets()
        return {
            name: [
                f"{name}/{part}/{k}" for part, mod in (("backbone", net.backbone), ("head", net.head)) for k in mod.state_dict()
            ]
            for name, net in (("student", student), ("teacher", teacher))
        }


CONFIG_SCHEMAS: dict[str, type] = {
    "model/dino_schema": DinoConfig,
    "data/digits_schema": DigitsConfig,
    "data/imagefolder_schema": ImageFolderConfig,
}
