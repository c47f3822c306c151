"""The data as the model sees it: loading (`load`: hub id, the synthetic folder, or the user's
own folder via `user`), images and chats (`load`), batches (`collate`), and the checks run
before training (`checks`, with findings in `report` and planted defects in `defects`).

Imports only `config`, `io`, `offline` and `model` (the processor, for counting tokens).
"""
from .checks import check_dataset, clean_split, scan_row, scan_split
from .collate import (IGNORE, GenerationCollator, SampleTooLongError, TrainCollator, count_tokens,
                      prompt_text)
from .defects import bomb_png, plant_defects
from .load import (MAX_ASPECT_RATIO, MIN_IMAGE_SIDE, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, SPLITS,
                   DataError, ImageError, control_tokens, escape_control_text, load_tableqa, open_image,
                   to_messages, to_rgb, validate_columns)
from .report import DataCheckError, DataReport, ImageMemo, Problem

__all__ = ["DataCheckError", "DataError", "DataReport", "GenerationCollator", "IGNORE", "ImageError",
           "ImageMemo", "MAX_ASPECT_RATIO", "MIN_IMAGE_SIDE", "OPTIONAL_COLUMNS", "Problem",
           "REQUIRED_COLUMNS", "SPLITS", "SampleTooLongError", "TrainCollator", "bomb_png",
           "check_dataset", "clean_split", "control_tokens", "count_tokens", "escape_control_text",
           "load_tableqa", "open_image", "plant_defects", "prompt_text", "scan_row", "scan_split",
           "to_messages", "to_rgb", "validate_columns"]
