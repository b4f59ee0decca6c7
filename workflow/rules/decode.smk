# k2 decoding of every trained model on every test set with every decoding method, and WER scoring.
# A dynamic-chunk student is decoded once per chunk size, in folders TEST_SET-METHOD@chunkN
# ({at_chunk} is empty for every other model).

DECODE_OUT = f"{EXP}/{{run}}/{DECODE_FOLDER}/{{test_set}}-{{method}}{{at_chunk}}"
SEARCH_ARGS = search_args()


rule decode:
    input:
        model=f"{EXP}/{{run}}/{DECODED_MODEL_FILE}",
        cuts=checked_cuts("{test_set}"),
        bpe=BPE_MODEL,
        graph=decoding_graph,
    output:
        hyps=f"{DECODE_OUT}/hyps.jsonl",
        stats=f"{DECODE_OUT}/decode.json",
    params:
        graph=lambda w, input: f"--graph {input.graph}" if input.graph else "",
        search=SEARCH_ARGS,
        chunk=chunk_arg,
    wildcard_constraints:
        test_set=alternatives(TEST_SETS),
        method=alternatives(METHOD_NAMES),
        at_chunk=AT_CHUNK_PATTERN,
    threads: THREADS
    resources:
        **RESOURCES["decode"],
    log:
        f"{EXP}/{{run}}/log/{DECODE_FOLDER}-{{test_set}}-{{method}}{{at_chunk}}.log",
    benchmark:
        f"{EXP}/{{run}}/benchmark/{DECODE_FOLDER}-{{test_set}}-{{method}}{{at_chunk}}.tsv"
    conda:
        CONDA_ENV
    shell:
        "streamkd decode --checkpoint {input.model} --cuts {input.cuts} --bpe-model {input.bpe}"
        " --method {wildcards.method} {params.chunk} {params.graph} --hyps {output.hyps} --stats {output.stats}"
        " {params.search} --threads {threads} > {log} 2>&1"


rule score:
    input:
        hyps=f"{DECODE_OUT}/hyps.jsonl",
    output:
        summary=f"{DECODE_OUT}/wer.json",
        errors=f"{DECODE_OUT}/errors.jsonl",
    wildcard_constraints:
        test_set=alternatives(TEST_SETS),
        method=alternatives(METHOD_NAMES),
        at_chunk=AT_CHUNK_PATTERN,
    resources:
        **RESOURCES["default"],
    log:
        f"{EXP}/{{run}}/log/score{DECODE_FOLDER[len('decode'):]}-{{test_set}}-{{method}}{{at_chunk}}.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd score --hyps {input.hyps} --summary {output.summary}"
        " --errors {output.errors} > {log} 2>&1"


# decoding.average_last: N > 1 decodes the average of the last N epochs' weights (icefall's
# --avg), written beside model.pt from the run's epoch checkpoints.
rule average_checkpoints:
    input:
        model=f"{EXP}/{{run}}/model.pt",
    output:
        model=f"{EXP}/{{run}}/model-avg-last-{{n}}.pt",
    params:
        run_dir=lambda w, input: parent_dir(input.model),
    wildcard_constraints:
        n=r"[0-9]+",
    resources:
        **RESOURCES["default"],
    log:
        f"{EXP}/{{run}}/log/average-last-{{n}}.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd average-checkpoints --run-dir {params.run_dir} --last {wildcards.n} --out {output.model} > {log} 2>&1"
