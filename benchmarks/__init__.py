"""The speed suite: every figure beside its bound or baseline, both measured in the same run, as a ratio.

Run from the repository root, `python -m benchmarks [quick=true] [rows=...] [write=BENCHMARKS.md]` (`just bench`);
it is not part of the installed package. `harness` holds the sizes, timing, table and command line, `media` the
synthetic media (generated once under `<root>/media`, so a rerun skips making them), and each row group is a module
of its own with a `rows` function, numbered as in BENCHMARKS.md:

- `extraction`: 1, extraction of 10 s clips at 720p and 1080p with a timm backbone against its bounds, the decode
  stage alone (what a DataLoader worker does) and the backbone alone on already-made view images at the same batch;
  2, the same extraction against the way winners' scripts do it: every frame to RGB, key frames through PNG files,
  one image per forward pass;
- `cache`: 3, reading a track's features from the cache's Parquet parts against `np.load` of the same array, and
  reading them with a second version of every item in the cache against reading them alone;
- `training`: 4, the 10-fold head training of a run against a bare PyTorch loop doing the same work;
- `memory`: 5, peak resident memory of a large extraction against a small one, each in a process of its own;
- `sweep`: 6, the overhead of a trial of our sweep (storage, heartbeats, pruning, bookkeeping) against the trial's own
  fold training, with SQLite and with journal storage;
- `fingerprint`: 7, fingerprinting a file's whole content (what binds the cache to its media) against decoding it as
  extraction does, on a 4K JPEG, a 1080p clip and a long 1080p clip;
- `motion`: 8, extracting a motion stream (clips of consecutive frames from each key frame, weight-free temporal
  statistics) against decoding the same clips alone;
- `audio`: 9, the audio stream's work per video (its soundtrack to 16 kHz mono, a window at each key frame, log-mel
  statistics) against PyAV decoding the same soundtrack alone;
- `text`: 10, a CLIP text tower's first encoding of distinct prompts against its image tower on an item's key frames,
  and a rerun's read of the tower's memo against the hashed default;
- `predictor`: 11, `predict --list` of an exported KVQ run against the workbench's own path for the same test items
  (their extraction into a fresh cache, then the fold heads);
- `hdr`: 12, the full-reference metrics of HDR10 pairs (FFmpeg's, in code values and PU) against decoding the pairs
  alone; 13, HDR key frames as perceptual ICtCp through our decode against the video decoder's RGB of them;
- `finetune`: 14, one fold of `train finetune=true` (backbone and head tuned from the media) against a bare PyTorch
  loop on the same model and data, in training images a second;
- `lmm`: 15, the LMM stream's extraction (a random Qwen2-VL built offline, two prompts, AIGV videos with their
  prompts) against a bare transformers loop, processor and forward per prompt, over the same frames decoded
  beforehand, in the same batches;
- `runs`: 16, `just runs` over many runs against reading their summary rows alone; 17, the bootstrap interval over
  resampled groups against expanding each resample and scoring it with the track's own score.
- `nss`: 18, the weight-free image statistics (`quality_stats`) on the key frames, extracted, against decoding the
  same key frames alone (the weight-free video family, `temporal_stats`, is row 8's).

Apart from the suite, `python -m benchmarks.real_content` measures the weight-free default on real photographs and
footage (packages' sample media, distortion ladders with a known truth, the FIQA and KVQ layouts, the workbench's own
extract, train and submit). `python -m benchmarks.gpu_lmm` is a prepared check for a CUDA machine: the LMM stream's
encoder and a LoRA training step at Qwen2-VL-2B's shape (random weights, bfloat16), each against a bare loop, in items
or steps a second and peak GPU memory (`--smoke` runs it on the CPU with a tiny model).
"""
