"""The RewardRanker reranker: its model, training data, training and evaluation."""
