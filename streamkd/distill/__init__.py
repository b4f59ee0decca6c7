"""Distillation from the full-context teacher into a streaming student.

- :mod:`~streamkd.distill.config`: the settings of one KD run (method, layers, APC shift, loss);
- :mod:`~streamkd.distill.mapping`: student layer -> teacher layer pairs;
- :mod:`~streamkd.distill.shift`: APC-shifted frame pairing over valid frames;
- :mod:`~streamkd.distill.distances`: per-frame distances (l1, l2, cos, l1_cos);
- :mod:`~streamkd.distill.branches`: auxiliary non-streaming branches and projections;
- :mod:`~streamkd.distill.losses`: the layer/aux and token KD terms;
- :mod:`~streamkd.distill.teacher`: loading and freezing the teacher;
- :mod:`~streamkd.distill.grid`: the experiment grid and run names.

The configuration modules import no torch, so the workflow can check a config quickly.
"""
