# Every recipe takes key=value words, e.g. `just extract track=kvq backbone=quality_stats views=center,hflip`.
set positional-arguments

python := env_var_or_default("PYTHON", "python3")

# list the recipes
default:
    @just --list

# synthesise, extract, train every fold, submit and score on the built-in demo data
demo *args:
    @{{python}} -m workbench demo "$@"

# teacher, student alone and student distilled from its pseudo-labels on demo data with most labels withheld: track=fiqa [teacher.<key>=] [student.<key>=]
demo-student *args:
    @{{python}} -m workbench demo-student "$@"

# write a synthetic dataset in a track's organiser layout: out=<dir> [items=<n>] [seed=<s>] [withhold=<share>]
synth *args:
    @{{python}} -m workbench synth "$@"

# fill the feature cache: track=<t> data=<dir> [backbone=<name>] [view=resize] [size=224] [views=center,hflip]
extract *args:
    @{{python}} -m workbench extract "$@"

# train one fold: track=<t> fold=<k> [head=linear] [loss=mse:1,plcc:1] [epochs=30]
train-fold *args:
    @{{python}} -m workbench train-fold "$@"

# train every fold into one run
train *args:
    @{{python}} -m workbench train "$@"

# an Optuna study over heads, losses, optimiser and cached feature sets: track=<t> trials=<n> [storage=<url>] [study=<name>]
sweep *args:
    @{{python}} -m workbench sweep "$@"

# train the best trial of a sweep into a run for submit: track=<t> [storage=<url>] [study=<name>]
sweep-best *args:
    @{{python}} -m workbench sweep-best "$@"

# blend runs, calibrate, write submissions/<name>/ (zip, report): track=<t> [runs=<id>,<id>] [blend=auto] [calibration=]
submit *args:
    @{{python}} -m workbench submit "$@"

# pack runs into a folder and zip with an executable `predict MEDIA RESULT_FILE`: track=<t> runs=<ids> [out=exports]
export *args:
    @{{python}} -m workbench export "$@"

# label unlabelled media with teacher runs' blend, for a student's `pseudo=`: track=<t> runs=<ids> unlabelled=<folder or list>
pseudo-label *args:
    @{{python}} -m workbench pseudo-label "$@"

# official score of a prediction csv or zip: track=<t> preds=<file> truth=<dir>
score *args:
    @{{python}} -m workbench score "$@"

# parameters and GMACs per item of the whole pipeline against the track's budget: track=<t> [backbone=<name>]
profile *args:
    @{{python}} -m workbench profile "$@"

# every pretrained component a configuration needs, present or missing, with its licence: track=<t> [the words of extract and train] [fetch=true] [bundle=<folder>]
weights *args:
    @{{python}} -m workbench weights "$@"

# the feature caches, or prune their versions of items: [track=<t>] | prune [keep=<data dir>,...] [older=<days>] [size=<GB>]
cache *args:
    @{{python}} -m workbench cache "$@"

# the benchmark suite, ratios against bounds and baselines: [quick=true] [write=BENCHMARKS.md] [rows=cache,training]
bench *args:
    @{{python}} -m benchmarks "$@"

# the test suite, a file per worker at a time: a worker more than the cores, as many tests wait on the processes they
# start; each worker's torch on one thread, as more would only contend for the cores (`python -m pytest tests/<file>`
# runs one file in one process)
test *args:
    @OMP_NUM_THREADS=1 {{python}} -m pytest -q -n $(( $(nproc) + 1 )) --dist loadfile "$@"

# ruff's lint and format checks over the whole tree (what CI runs before the tests)
lint:
    @{{python}} -m ruff check .
    @{{python}} -m ruff format --check .

# the runs of a track, best first, with 95% intervals: track=<t> [top=20] [where=<setting>=<value>] [sort=score|when|cost|time]
runs *args:
    @{{python}} -m workbench runs "$@"

# two runs on the same out-of-fold items, a paired bootstrap over groups: track=<t> runs=<a>,<b>
compare *args:
    @{{python}} -m workbench compare "$@"

# record a submission's leaderboard score: track=<t> submission=<name> score=<x> [phase=val|test] [note=...]
lb *args:
    @{{python}} -m workbench lb "$@"

# read an organiser's folder and report splits, groups, label ranges, missing or unreadable media: track=<t> data=<dir>
check *args:
    @{{python}} -m workbench check "$@"

# a large multimodal model's own answers scored against the labels before any training: track=<t> lmm=<model id or folder>
zero-shot *args:
    @{{python}} -m workbench zero-shot "$@"
