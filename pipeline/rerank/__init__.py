"""The rerank stage's model: candidates of the fused search reordered by a learned ranker reading question and sentence."""
