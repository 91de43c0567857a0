"""Benchmarks: speed (tokens/s, time to first token, memory), quality (BLEU/chrF++, multiple choice), reports."""
