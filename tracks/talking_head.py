"""Talking heads: NTIRE 2025 XGC track 3 (THQA-NTIRE), AI-generated talking-head videos with their speech.

Official (the organisers' files and example zip, copies in shared/reference/thqa):
  * `thqa_ntire_train.csv` header `Video,Score` (0 to 5); `thqa_ntire_vallist.csv` and `thqa_ntire_testlist.csv`
    header `Video`; CRLF (the label files the organisers released later end without a newline);
  * names `<source image>_<image model>_common_voice_en_<speech>_<generator>.mp4` for generated faces, and
    `<image>_voice_en_<speech>_<generator>.mp4` or `<image>_SEN_<sentence>_<distortion>.mp4` for real ones; no test
    source image appears in training, so folds are grouped by it (`source_image`);
  * score: (SRCC + PLCC) / 2;
  * submission: `output.txt` alone at the zip root, no header, lines `name.mp4,score` in the list's order.
Ours (assumed):
  * the phase follows the download: the test list is the test split once it is there, the validation list before;
  * `just score truth=` takes the organisers' released label file (`thqa_ntire_val.csv`, `thqa_ntire_test.csv`)
    as well as a synthetic dataset's `truth/` folder;
  * the videos lie beside the lists.
Audio matters (lead, lag and pauses against the mouth), so the track's default configuration adds the audio stream:
log-mel statistics of a window of speech at each key frame, and the audio-mouth sync stream.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.inputs import Category, Video
from tracks.base import CorrelationTrack, register_track
from tracks.formats import CsvFormat
from tracks.layout import media_paths, phased_items, read_csv_list

TRAIN_LIST, VAL_LIST, TEST_LIST = "thqa_ntire_train.csv", "thqa_ntire_vallist.csv", "thqa_ntire_testlist.csv"


def read_list(path: Path, labelled: bool) -> pd.DataFrame:
    """A `Video[,Score]` list as the organisers ship it (CRLF, with or without a final newline)."""
    return read_csv_list(path, "Video", "Score", labelled)


REAL_SETS = ("voice", "SEN")  # second fields of the sets of real faces (`4_voice_en_...`, `5372021_SEN_...`)


def source_image(name: str) -> str:
    """The source image of a name: its first field, marked with its set for the real faces (`4_voice`), which number
    their images as the generated faces do (`4_dalle3_...`), so the first field alone would join different faces."""
    first, _, rest = name.partition("_")
    kind = rest.split("_", 1)[0]
    return f"{first}_{kind}" if kind in REAL_SETS else first


def generator(name: str) -> str:
    """What made the clip: the generator, the name's last field (`sadtalker`); for a real face's distorted clip
    (`..._SEN_<sentence>_qp_level_9`) the kind of its distortion (`SEN_qp_level`), its level left out."""
    fields = name.removesuffix(".mp4").split("_")
    return "SEN_" + "_".join(fields[-3:-1]) if "SEN" in fields[1:2] else fields[-1]


@register_track
class TalkingHead(CorrelationTrack):
    name = "talking_head"
    title = "NTIRE 2025 XGC track 3: talking-head video quality (THQA-NTIRE)"
    inputs = (Video(), Category("generator", generator))
    targets = ("score",)
    score_range = (-2.5, 7.5)  # scores are 0 to 5
    submission = CsvFormat("output.txt", "Video", ("score",), header=False)
    # Key frames each second of 3-4 s clips; beside them the speech at each key frame and the mouth's sync with it
    # over the clip's first 8 frames (about a second at THQA's frame rates).
    defaults = {
        "frames": 4,
        "size": 224,
        "loss": "mse:1,plcc:1",
        "audio": "logmel_stats",
        "sync": "av_sync",
        "clip": 8,
        "clip_size": 64,
        "audio_seconds": 1.0,
    }
    tta_views = ("center", "hflip")

    def read_items(self, data: Path) -> pd.DataFrame:
        data = Path(data)
        items, listed = phased_items(data, (TRAIN_LIST, VAL_LIST, TEST_LIST), read_list, "Video")
        items = items.rename(columns={"Video": "item_id", "Score": "score"})
        items["path"] = media_paths(data, items["item_id"], str(listed))
        items["group"] = items["item_id"].map(source_image)
        items["generator"] = items["item_id"].map(self.inputs[1].parse)
        return items[["item_id", "path", "split", "group", "generator", "score"]]

    def read_truth(self, truth: Path) -> pd.DataFrame:
        """The organisers' label file itself (`Video,Score`), or a synthetic dataset's `truth/` folder holding one."""
        path = Path(truth)
        table = read_list(path / self.truth_file if path.is_dir() else path, labelled=True)
        return pd.DataFrame({"score": table["Score"].to_numpy()}, index=pd.Index(table["Video"], name="item_id"))
