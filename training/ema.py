"""Exponential moving average (EMA) teacher: an fp32 copy of a module that trails its weights.

``teacher <- decay * teacher + (1 - decay) * student`` after every optimiser step, with the
decay annealed linearly from ``start`` to ``end`` over ``anneal_steps`` steps, then held.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, start: float, end: float, anneal_steps: int) -> float:
    """Decay after optimiser step ``step`` (0-based): linear from ``start`` at step 0 to
    ``end`` at ``anneal_steps``, then ``end``."""
    if anneal_steps <= 0 or step >= anneal_steps:
        return end
    return start + (end - start) * step / anneal_steps


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen fp32 copy of ``student`` in eval mode."""
    teacher = copy.deepcopy(student).float().eval()
    return teacher.requires_grad_(False)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """Move every parameter of ``teacher`` towards ``student``'s by ``1 - decay``; copy the
    buffers. Both modules must have the same structure."""
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        raise ValueError("teacher and student have different parameters")
    for name, param in teacher_params.items():
        param.lerp_(student_params[name].detach().to(param.dtype), 1.0 - decay)
    student_buffers = dict(student.named_buffers())
    for name, buffer in teacher.named_buffers():
        buffer.copy_(student_buffers[name])
