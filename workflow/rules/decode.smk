# k2 decoding of every trained model on every test set, and WER scoring.


def decode_dir(run, test_set):
    return f"{EXP}/{run}/decode/{test_set}-{DECODING_METHOD}"


rule decode:
    input:
        model=f"{EXP}/{{run}}/model.pt",
        cuts=f"{DATA}/fbank/cuts_{{test_set}}.jsonl.gz",
        bpe=BPE_MODEL,
        graph=CTC_TOPO,
    output:
        hyps=f"{EXP}/{{run}}/decode/{{test_set}}-{DECODING_METHOD}/hyps.jsonl",
    params:
        search_beam=config["decoding"].get("search_beam", 20),
        output_beam=config["decoding"].get("output_beam", 8),
    threads: THREADS
    resources:
        **RESOURCES["decode"],
    log:
        f"{EXP}/{{run}}/log/decode-{{test_set}}-{DECODING_METHOD}.log",
    shell:
        "streamkd decode --checkpoint {input.model} --cuts {input.cuts}"
        " --bpe-model {input.bpe} --graph {input.graph} --hyps {output.hyps}"
        " --search-beam {params.search_beam} --output-beam {params.output_beam} --threads {threads} > {log} 2>&1"


rule score:
    input:
        hyps=f"{EXP}/{{run}}/decode/{{test_set}}-{DECODING_METHOD}/hyps.jsonl",
    output:
        summary=f"{EXP}/{{run}}/decode/{{test_set}}-{DECODING_METHOD}/wer.json",
        errors=f"{EXP}/{{run}}/decode/{{test_set}}-{DECODING_METHOD}/errors.jsonl",
    resources:
        **RESOURCES["default"],
    log:
        f"{EXP}/{{run}}/log/score-{{test_set}}-{DECODING_METHOD}.log",
    shell:
        "streamkd score --hyps {input.hyps} --summary {output.summary}"
        " --errors {output.errors} > {log} 2>&1"
