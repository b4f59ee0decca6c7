# Teacher-target caches: the frozen teacher runs once over the training cuts and stores what
# KD cells read instead of running it (kd.teacher_targets: cache). One cache per set of
# targets (exp/teacher/targets/layers2_4/, .../posteriors/), rebuilt whenever the teacher
# checkpoint or the training cuts change.


rule cache_teacher:
    input:
        model=TEACHER_MODEL,
        cuts=checked_cuts("train"),
    output:
        cuts=f"{TEACHER_CACHE}/{{targets}}/cuts_train.jsonl.gz",
        storage=f"{TEACHER_CACHE}/{{targets}}/targets.lca",
        summary=f"{TEACHER_CACHE}/{{targets}}/summary.json",
    params:
        targets=cache_args,
    wildcard_constraints:
        targets="layers[0-9]+(_[0-9]+)*|posteriors",
    threads: THREADS
    # Training jobs wait for it; the decodes of the teacher and the baseline do not.
    priority: 10
    resources:
        **RESOURCES["decode"],
    log:
        f"{EXP}/{TEACHER_RUN}/log/cache_teacher-{{targets}}.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd cache-teacher --teacher {input.model} --cuts {input.cuts} --out-cuts {output.cuts}"
        " {params.targets} --threads {threads} > {log} 2>&1"
