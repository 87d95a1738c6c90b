"""UniverSeg: in-context segmentation of a query given a support set (``model=universeg``)."""

from waypoint.tasks.universeg.task import CONFIG_SCHEMAS, PRESETS, UniverSegConfig, UniverSegTask, hard_dice, soft_dice_loss

__all__ = ["CONFIG_SCHEMAS", "PRESETS", "UniverSegConfig", "UniverSegTask", "hard_dice", "soft_dice_loss"]
