"""Stack-Wise: a byte-level LM grown as a rack of stacks, earlier stacks frozen (``model=stackwise``)."""

from waypoint.tasks.stackwise.rack import extract_stack
from waypoint.tasks.stackwise.task import CONFIG_SCHEMAS, PRESETS, STRATEGIES, LoRAConfig, StackWiseConfig, StackWiseTask

__all__ = ["CONFIG_SCHEMAS", "PRESETS", "STRATEGIES", "LoRAConfig", "StackWiseConfig", "StackWiseTask", "extract_stack"]
