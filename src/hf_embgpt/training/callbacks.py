"""A Trainer callback that saves the wpe similarity heatmap every N steps, to watch positions organise in training.

    trainer = Trainer(..., callbacks=[WpeHeatmapCallback(every_n_steps=200)])

writes `<output_dir>/wpe_similarity/step-000200.png`, `step-000400.png`, ... and one at the end of training.
Only the main process writes. Needs matplotlib (the `inspect` extra).
"""

import logging
import os

from transformers import TrainerCallback

from ..embeddings import cosine_similarity_matrix, embedding_tables, plot_similarity_heatmap, save_figure

logger = logging.getLogger(__name__)


class WpeHeatmapCallback(TrainerCallback):
    """Save `wpe`'s position x position cosine-similarity heatmap every `every_n_steps` optimizer steps.

    Args:
        every_n_steps: interval in optimizer steps (a positive integer).
        output_dir: folder for the PNGs; default `<TrainingArguments.output_dir>/wpe_similarity`.
    """

    def __init__(self, every_n_steps=100, output_dir=None):
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self.output_dir = output_dir
        self.saved = []  # paths written, in order

    def _save(self, args, state, model):
        if not state.is_world_process_zero or model is None:
            return
        model = getattr(model, "module", model)  # DDP / accelerate wrappers keep the model in .module
        _, wpe = embedding_tables(model)
        folder = self.output_dir or os.path.join(args.output_dir, "wpe_similarity")
        path = os.path.join(folder, f"step-{state.global_step:06d}.png")
        if path in self.saved:  # the last step may also be a multiple of every_n_steps
            return
        title = f"wpe cosine similarity, step {state.global_step}"
        save_figure(plot_similarity_heatmap(cosine_similarity_matrix(wpe), title=title), path)
        self.saved.append(path)
        logger.info(f"saved {path}")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every_n_steps == 0:
            self._save(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._save(args, state, model)
