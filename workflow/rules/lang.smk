# Tokens (sentencepiece BPE) and the k2 decoding graph built over them.

BPE_MODEL = f"{DATA}/lang/bpe.model"
CTC_TOPO = f"{DATA}/lang/ctc_topo.pt"


rule train_bpe:
    input:
        cuts=f"{DATA}/fbank/cuts_train.jsonl.gz",
    output:
        model=BPE_MODEL,
    params:
        vocab_size=config["bpe"]["vocab_size"],
        model_type=config["bpe"].get("model_type", "bpe"),
    resources:
        **RESOURCES["default"],
    log:
        f"{DATA}/logs/train_bpe.log",
    shell:
        "streamkd train-bpe --cuts {input.cuts} --model {output.model}"
        " --vocab-size {params.vocab_size} --model-type {params.model_type} > {log} 2>&1"


rule compile_ctc_topo:
    input:
        bpe=BPE_MODEL,
    output:
        graph=CTC_TOPO,
    resources:
        **RESOURCES["default"],
    log:
        f"{DATA}/logs/compile_ctc_topo.log",
    shell:
        "streamkd compile-ctc-topo --bpe-model {input.bpe} --out {output.graph} > {log} 2>&1"
