"""Teach the agent the open repository: SVG data generation, datasets, LoRA training, reranker."""
