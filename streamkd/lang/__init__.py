"""Language resources for HLG decoding: a word n-gram LM, a BPE lexicon and the k2 graphs."""
