"""DINO: self-distillation of a ViT student into its EMA teacher on multi-crops (``model=dino``)."""

from waypoint.tasks.dino.task import CONFIG_SCHEMAS, PRESETS, DinoConfig, DinoTask

__all__ = ["CONFIG_SCHEMAS", "PRESETS", "DinoConfig", "DinoTask"]
