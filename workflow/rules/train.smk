# The full-context teacher and the streaming students of the grid.

TRAIN_INPUTS = dict(
    train=f"{DATA}/fbank/cuts_train.jsonl.gz",
    dev=f"{DATA}/fbank/cuts_dev.jsonl.gz",
    bpe=BPE_MODEL,
)
TRAIN_SHELL = (
    TRAIN_LAUNCHER + "streamkd train --role {params.role} --train-cuts {input.train}"
    " --dev-cuts {input.dev} --bpe-model {input.bpe} --out-dir {params.out_dir}"
    " --encoder {params.encoder:q} --optimisation {params.optimisation:q} --seed {params.seed}"
    " --threads {threads} {params.streaming} > {log} 2>&1"
)


rule train_teacher:
    input:
        **TRAIN_INPUTS,
    output:
        model=f"{EXP}/{TEACHER_RUN}/model.pt",
        summary=f"{EXP}/{TEACHER_RUN}/train_summary.json",
    params:
        role="teacher",
        out_dir=f"{EXP}/{TEACHER_RUN}",
        encoder=as_json(config["model"]["teacher"]),
        optimisation=as_json(config["training"]["teacher"]),
        seed=config["training"].get("teacher_seed", 0),
        streaming="",
    threads: TRAIN_THREADS
    resources:
        **RESOURCES["train"],
    log:
        f"{EXP}/{TEACHER_RUN}/log/train.log",
    shell:
        TRAIN_SHELL


rule train_student:
    input:
        **TRAIN_INPUTS,
    output:
        model=f"{EXP}/none-chunk{{chunk}}-seed{{seed}}/model.pt",
        summary=f"{EXP}/none-chunk{{chunk}}-seed{{seed}}/train_summary.json",
    params:
        role="student",
        out_dir=lambda w: f"{EXP}/none-chunk{w.chunk}-seed{w.seed}",
        encoder=as_json(config["model"]["student"]),
        optimisation=as_json(config["training"]["student"]),
        seed=lambda w: w.seed,
        streaming=lambda w: f"--chunk-size {w.chunk} --left-chunks {config['model'].get('left_chunks', -1)}",
    wildcard_constraints:
        chunk=r"\d+",
        seed=r"-?\d+",
    threads: TRAIN_THREADS
    resources:
        **RESOURCES["train"],
    log:
        f"{EXP}/none-chunk{{chunk}}-seed{{seed}}/log/train.log",
    shell:
        TRAIN_SHELL
