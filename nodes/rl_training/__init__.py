"""finrl-training-service: RL agents (PPO, A2C, SAC) trained in a trading environment over ml_features, evaluated against buy-and-hold and flat."""
