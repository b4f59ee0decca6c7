# What each job asks a cluster for (memory, runtime, GPUs, partition) and how training jobs
# start their processes. Values come from the config's `resources` and `training` sections
# (streamkd/cluster.py has the defaults); a profile overrides any of them per rule with
# `set-resources` (see workflow/profiles/README.md). CPUs are each rule's `threads`.

from streamkd.cluster import rule_resources, train_launcher, train_threads

RESOURCES = {stage: rule_resources(config, stage) for stage in ("default", "corpus", "features", "train", "decode")}
TRAIN_LAUNCHER = train_launcher(config)
TRAIN_THREADS = train_threads(config)
KD_TRAIN_THREADS = train_threads(config, distils=True)
