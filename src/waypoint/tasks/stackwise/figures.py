"""Stack-Wise pictures for the run report: text generated after each stack, and bits per byte per stack.

"After each stack" is both the rack when each stack's phase ended (a kept checkpoint) and the final rack read out
after each stack; for both, held-out bits per byte and a sample from a fixed generator. ``wanted`` names the
checkpoints to restore; ``render`` returns report sections, as in ``dino.figures``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from waypoint.tasks.common import sample_generator
from waypoint.tasks.stackwise.model import VOCAB

#: held-out windows scored per snapshot, bytes generated per sample, sampling temperature
WINDOWS, SAMPLE_BYTES, TEMPERATURE = 16, 120, 0.8
_STACK_KEY = re.compile(r"^task/rack/stacks/(\d+)/")


def stacks_in(keys: Collection[str]) -> int:
    """How many stacks a checkpoint's rack holds, from its tensor keys."""
    found = {int(m.group(1)) for k in keys if (m := _STACK_KEY.match(k))}
    return max(found) + 1 if found else 0


def wanted(checkpoints: Sequence[tuple[str, int, Collection[str]]]) -> list[str]:
    """The newest checkpoint holding each number of stacks, fewest stacks first."""
    newest: dict[int, tuple[int, str]] = {}
    for name, step, keys in checkpoints:
        n = stacks_in(keys)
        if n and (n not in newest or step > newest[n][0]):
            newest[n] = (step, name)
    return [newest[n][1] for n in sorted(newest)]


def _windows(task: Any) -> torch.Tensor:
    data = task.val_dataset()
    return torch.stack([data[i]["tokens"] for i in range(min(WINDOWS, len(data)))]).to(task.device)


@torch.no_grad()
def bits_per_byte(task: Any, tokens: torch.Tensor, after: int | None = None) -> float:
    """Held-out bits per byte of the rack, or of its read-out after stack ``after`` (1-based) when given."""
    rack = task.rack
    rack.eval()
    x, y = tokens[:, :-1], tokens[:, 1:]
    logits = rack(x) if after is None else rack.head(rack.prefix(x, after))
    return float(F.cross_entropy(logits.float().reshape(-1, VOCAB), y.reshape(-1))) / math.log(2)


@torch.no_grad()
def sample(task: Any, prompt: torch.Tensor, after: int | None = None) -> str:
    """``SAMPLE_BYTES`` bytes continued from ``prompt``, sampled at ``TEMPERATURE`` with a generator seeded by the run."""
    rack, window = task.rack, task.dims.seq_len
    gen = sample_generator(task.seed, "stackwise-report-sample")
    tokens = prompt.clone()
    for _ in range(SAMPLE_BYTES):
        x = tokens[-window:].unsqueeze(0)
        logits = rack(x) if after is None else rack.head(rack.prefix(x, after))
        probs = torch.softmax(logits[0, -1].float().cpu() / TEMPERATURE, dim=-1)
        tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=gen).to(tokens.device)])
    return printable(bytes(tokens[len(prompt) :].tolist()))


def printable(data: bytes) -> str:
    """Bytes as text a report can show: UTF-8 (invalid sequences as U+FFFD), control characters but newlines as '·'."""
    text = data.decode("utf-8", errors="replace").replace("\t", " ")
    return "".join("·" if unicodedata.category(c) == "Cc" and c != "\n" else c for c in text)


def _prompt(tokens: torch.Tensor) -> torch.Tensor:
    return tokens[0, : max(8, tokens.shape[1] // 2)]


def _phase_rows(task: Any, snapshots: Sequence[tuple[str, int, Mapping]], tokens: torch.Tensor) -> list[list[Any]]:
    rows = []
    for _, step, state in snapshots[1:]:  # the first snapshot is the initial rack
        task.load_state_dict(state)
        rows.append([len(task.specs), step, bits_per_byte(task, tokens), sample(task, _prompt(tokens))])
    return rows


def _readout_rows(task: Any, tokens: torch.Tensor) -> list[list[Any]]:
    n = len(task.specs)
    return [[k, bits_per_byte(task, tokens, k), sample(task, _prompt(tokens), k)] for k in range(1, n + 1)]


def bpb_figure(phase_rows: list[list[Any]], readout_rows: list[list[Any]], baseline: float | None, path: Path) -> Path:
    """Bits per byte per stack: at the end of each stack's phase, and the final rack read out after each stack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.plot([r[0] for r in readout_rows], [r[1] for r in readout_rows], "o-", label="final rack, read out after stack k")
    ax.plot([r[0] for r in phase_rows], [r[2] for r in phase_rows], "s--", label="rack at the end of stack k's phase")
    if baseline is not None:
        ax.axhline(baseline, ls=":", color="grey", label=f"baseline: byte unigram {baseline:.3f}")
    ax.set_xticks([r[0] for r in readout_rows])
    ax.set_xlabel("stacks")
    ax.set_ylabel("held-out bits per byte")
    ax.set_title("bits per byte per stack", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render(task: Any, snapshots: Sequence[tuple[str, int, Mapping]], out: Path) -> list[dict[str, Any]]:
    """Samples and bits per byte after each stack: per phase (restored checkpoints) and read out of the final rack."""
    tokens = _windows(task)
    phase_rows = _phase_rows(task, snapshots, tokens)  # leaves the final snapshot loaded
    readout_rows = _readout_rows(task, tokens)
    baseline = float(task.data.unigram_val_bpb())
    prompt = printable(bytes(_prompt(tokens).tolist()))
    image = bpb_figure(phase_rows, readout_rows, baseline, out / "stackwise_bpb.png")
    text = [
        f"Bits per byte on {tokens.shape[0]} held-out windows, beside the byte-unigram baseline ({baseline:.3f}). "
        f"Samples: {SAMPLE_BYTES} bytes continued from the held-out prompt {prompt!r} at temperature {TEMPERATURE}."
    ]
    return [
        {"title": "Stack-Wise: bits per byte per stack", "text": text, "image": image},
        {
            "title": "Stack-Wise: samples at the end of each stack's phase",
            "text": ["The newest checkpoint holding each number of stacks (what retention kept)."],
            "table": (["stacks", "checkpoint step", "bits per byte", "sample"], phase_rows),
        },
        {
            "title": "Stack-Wise: samples read out after each stack of the final rack",
            "text": ["The final rack's hidden state after stack k, through its final norm and head."],
            "table": (["after stack", "bits per byte", "sample"], readout_rows),
        },
    ]
