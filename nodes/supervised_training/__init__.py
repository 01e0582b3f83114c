"""supervised-training-service: tree models on ml_features with purged walk-forward evaluation and promotion."""
