"""Learning rate as a pure function of (epoch, step): warmup by step, then the epoch schedule.

Being stateless, a resumed run gets exactly the learning rates of a straight one.
- warmup (while ``step <= warmup.steps``): linear from ``ratio·lr`` to ``lr``, exp, or constant;
- then CosineAnnealingLR (per epoch, to ``eta_min`` at ``T_max``), MultiStepLR or StepLR.
"""

from __future__ import annotations

import math

from ..config import ScheduleConfig


class LrSchedule:
    def __init__(self, cfg: ScheduleConfig) -> None:
        self.base_lr = cfg.optimizer.lr
        self.warmup = cfg.warmup
        self.sched = cfg.lr_schedule
        # T_max follows the number of epochs unless set: otherwise the cosine never completes
        self.t_max = cfg.lr_schedule.T_max or cfg.total_epochs

    def epoch_lr(self, epoch: int) -> float:
        s = self.sched
        if s.name == "CosineAnnealingLR":
            return s.eta_min + (self.base_lr - s.eta_min) * (1 + math.cos(math.pi * epoch / self.t_max)) / 2
        if s.name == "MultiStepLR":
            return self.base_lr * s.gamma ** sum(epoch >= m for m in (s.milestones or []))
        return self.base_lr * s.gamma ** (epoch // (s.step_size or 1))

    def lr_at(self, epoch: int, step: int) -> float:
        w = self.warmup
        if w.steps > 0 and step <= w.steps:
            if w.name == "constant":
                return self.base_lr * w.ratio
            if w.name == "exp":
                return self.base_lr * w.ratio ** (1 - step / w.steps)
            return self.base_lr * (1 - (1 - step / w.steps) * (1 - w.ratio))
        return self.epoch_lr(epoch)
