"""XGC AIGV: NTIRE 2025 XGC track 2, AI-generated video rated with its prompt (Q-Eval-Video).

Official (the organisers' announcement and files, copies in shared/reference/xgc_aigv):
  * `train_data.txt` lines `name.mp4|prompt|score` (scores 1 to 5); `val_data.txt` and `test_data.txt` lines
    `name.mp4|prompt`; UTF-8, no header. The name is the first field and the score the last, so a prompt holding `|`
    reads whole;
  * score: (SRCC + PLCC) / 2;
  * submission: `output.json`, a JSON list of `{"video": name, "predict_score": x}` in the list's order, and
    `readme.txt` (the four NTIRE lines).
Assumed:
  * the phase follows the download: the test list is the test split once it is there, the validation list before;
  * the videos lie in `videos/` beside the lists (VIDEO_DIR), or in the data folder itself;
  * folds are grouped by prompt (3,762 prompts for 23,820 training videos; most test prompts also occur in
    training, so a prompt's videos stay in one fold and the folds measure unseen prompts, the harder case).
The prompt is a text input: `text=hashed_ngrams` (the track's default) adds its features as a stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.inputs import Text, Video
from tracks.base import CorrelationTrack, register_track
from tracks.formats import JsonListFormat
from tracks.layout import LayoutError, find_media, phased_items, require_unique

TRAIN_LIST, VAL_LIST, TEST_LIST = "train_data.txt", "val_data.txt", "test_data.txt"
VIDEO_DIR = "videos"


def read_list(path: Path, labelled: bool) -> pd.DataFrame:
    """`name|prompt[|score]` lines; a line that is not UTF-8, has too few fields or a score that is no number is
    named by its line."""
    if not path.is_file():
        raise LayoutError(f"{path}: label file not found")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise LayoutError(f"{path}, line {line}: not UTF-8 ({error.reason})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < (3 if labelled else 2):
            expected = "name|prompt|score" if labelled else "name|prompt"
            raise LayoutError(f"{path}, line {number}: expected {expected}, found {line[:80]!r}")
        name, rest = fields[0].strip(), fields[1:]
        score = np.nan
        if labelled:
            *rest, cell = rest
            score = pd.to_numeric(cell.strip(), errors="coerce")
            if not np.isfinite(score):
                raise LayoutError(f"{path}, line {number}: score={cell!r} is not a finite number")
        rows.append({"video": name, "prompt": "|".join(rest).strip(), "score": float(score)})
    table = pd.DataFrame(rows, columns=["video", "prompt", "score"])
    require_unique(table["video"], str(path), header=False)
    return table


@register_track
class XGCAIGV(CorrelationTrack):
    name = "xgc_aigv"
    title = "NTIRE 2025 XGC track 2: AI-generated video quality with its prompt (Q-Eval-Video)"
    inputs = (Video(), Text("prompt"))
    targets = ("score",)
    score_range = (-1.0, 7.0)  # scores are 1 to 5
    submission = JsonListFormat("output.json", "video", ("predict_score",), readme="readme.txt")
    # The demo's 480 items: on 120 (84 training items) the 66 text features overfit and add nothing (0.47 against
    # 0.49 for key frames alone); on 480 they add 0.06 (0.62 against 0.55).
    defaults = {
        "frames": 4,
        "size": 224,
        "loss": "mse:1,plcc:1",
        "text": "hashed_ngrams",
        "items": 480,
        "lmm_text": "prompt",
    }  # an LMM reads the prompt beside the frames
    tta_views = ("center", "hflip")
    groups_cross_splits = True  # most test prompts also occur in training
    truth_file = "truth.json"  # in the submission's own format

    def read_items(self, data: Path) -> pd.DataFrame:
        data = Path(data)
        items, listed = phased_items(data, (TRAIN_LIST, VAL_LIST, TEST_LIST), read_list, "video")
        items = items.rename(columns={"video": "item_id"})
        items["path"] = find_media(data, items["item_id"], (VIDEO_DIR,), str(listed))
        items["group"] = items["prompt"]
        return items[["item_id", "path", "split", "group", "prompt", "score"]]
