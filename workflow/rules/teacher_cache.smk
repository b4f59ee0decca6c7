# The teacher-target cache: the frozen teacher runs once over the training cuts and stores the
# layer outputs and posteriors that the grid's KD cells read (kd.teacher_targets: cache).
# Rebuilt whenever the teacher checkpoint or the training cuts change.

TEACHER_CACHE = f"{EXP}/{TEACHER_RUN}/targets"
TEACHER_TARGETS = f"{TEACHER_CACHE}/cuts_train.jsonl.gz"
CACHED_OUTPUTS = cached_teacher_outputs(config)  # (teacher layers, posteriors) or None


rule cache_teacher:
    input:
        model=TEACHER_MODEL,
        cuts=f"{DATA}/fbank/cuts_train.jsonl.gz",
    output:
        cuts=TEACHER_TARGETS,
        storage=f"{TEACHER_CACHE}/targets.lca",
        summary=f"{TEACHER_CACHE}/summary.json",
    params:
        layers=f"--layers {','.join(map(str, CACHED_OUTPUTS[0]))}" if CACHED_OUTPUTS and CACHED_OUTPUTS[0] else "",
        posteriors="--posteriors" if CACHED_OUTPUTS and CACHED_OUTPUTS[1] else "--no-posteriors",
    threads: THREADS
    resources:
        **RESOURCES["decode"],
    log:
        f"{EXP}/{TEACHER_RUN}/log/cache_teacher.log",
    shell:
        "streamkd cache-teacher --teacher {input.model} --cuts {input.cuts} --out-cuts {output.cuts}"
        " {params.layers} {params.posteriors} --threads {threads} > {log} 2>&1"
