"""A callback that counts, per training stage (teacher, distill, baseline), the samples and optimiser steps it saw."""

from kdforge.callbacks import Callback


class StageCounts(Callback):
    def __init__(self):
        self.samples: dict[str, int] = {}
        self.steps: dict[str, int] = {}

    def on_step_end(self, trainer, samples):
        self.samples[trainer.stage] = self.samples.get(trainer.stage, 0) + samples
        self.steps[trainer.stage] = self.steps.get(trainer.stage, 0) + 1
