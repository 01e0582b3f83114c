"""RL agents (PPO, A2C, SAC of stable-baselines3) as :class:`~nodes.ml.model.Model`\\ s.

An agent is its policy network plus a card whose ``params`` say how to rebuild it: the
algorithm, the action kind, the network (``policy.net_arch``, ``policy.activation``) and the
feature scaling fitted on its training rows (``observation``). :meth:`AgentModel.to_bytes` is
the policy's ``state_dict`` written by ``torch.save``; :meth:`AgentModel.from_bytes` reads it
with ``torch.load(weights_only=True)`` (tensors only: nothing is unpickled) into a policy built
afresh from the card. SB3's own ``.zip`` load unpickles objects and is never used.

The observation is the scaled features of a row and the position held (``card.uses_position``).
Predictions are deterministic: discrete agents take the most probable of short / flat / long
(confidence: its probability); SAC's position in [-1, 1] is long or short beyond ``deadband``
(confidence: its size) and flat inside it (confidence: ``1 - |position| / deadband``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from nodes.ml.model import FeatureShapeError, Model, ModelCard, ModelError, Prediction
from nodes.ml.trading_env import Normalizer

ALGORITHMS: dict[str, str] = {"ppo": "discrete", "a2c": "discrete", "sac": "continuous"}
"""Algorithm → the action kind its agents trade with."""
ACTIVATIONS = ("tanh", "relu")


def _torch() -> Any:
    import torch

    return torch


def build_policy(params: Mapping[str, Any], width: int) -> Any:
    """A fresh SB3 policy of the shape ``params`` describes, for ``width`` features (+ the position)."""
    import gymnasium as gym
    import torch

    algorithm = params.get("algorithm")
    action = ALGORITHMS.get(str(algorithm))
    if action is None:
        raise ModelError(f"unknown RL algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    policy = params.get("policy") or {}
    activation = policy.get("activation", "tanh")
    if activation not in ACTIVATIONS:
        raise ModelError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    kwargs = {"net_arch": list(policy.get("net_arch", [64, 64])), "activation_fn": {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]}
    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(width + 1,), dtype=np.float32)
    if action == "discrete":
        from stable_baselines3.common.policies import ActorCriticPolicy

        return ActorCriticPolicy(observation_space, gym.spaces.Discrete(3), lambda _: 0.0, **kwargs)
    from stable_baselines3.sac.policies import SACPolicy

    return SACPolicy(observation_space, gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32), lambda _: 0.0, **kwargs)


class AgentModel(Model):
    kind: ClassVar[str] = "rl"

    def __init__(self, card: ModelCard, policy: Any) -> None:
        super().__init__(card)
        params = card.params
        self.algorithm = str(params.get("algorithm", card.kind))
        self.action = ALGORITHMS[self.algorithm]
        self.deadband = float(params.get("deadband", 0.1))
        self.normalizer = Normalizer.from_params(params["observation"])
        if len(self.normalizer.mean) != len(card.features):
            raise ModelError(f"agent card scales {len(self.normalizer.mean)} features but lists {len(card.features)}")
        self.policy = policy
        policy.set_training_mode(False)

    @classmethod
    def from_policy(cls, card: ModelCard, policy: Any) -> AgentModel:
        """An agent from a trained policy (``model.policy`` of an SB3 algorithm)."""
        return cls(card, policy)

    def observations(self, X: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """The environment's observations of rows ``X`` held at ``position`` (default flat)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.card.features):
            raise FeatureShapeError(f"agent takes rows of {len(self.card.features)} features, got shape {X.shape}")
        held = np.zeros(len(X)) if position is None else np.clip(np.asarray(position, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if len(held) != len(X):
            raise FeatureShapeError(f"{len(held)} positions for {len(X)} rows")
        obs = np.empty((len(X), X.shape[1] + 1), dtype=np.float32)
        obs[:, :-1] = self.normalizer(X)
        obs[:, -1] = held
        return obs

    def _outputs(self, X: np.ndarray, position: np.ndarray | None) -> np.ndarray:
        """Discrete: the probabilities of short / flat / long (n × 3); continuous: the positions (n)."""
        torch = _torch()
        obs = torch.as_tensor(self.observations(X, position))
        with torch.no_grad():
            if self.action == "discrete":
                return self.policy.get_distribution(obs).distribution.probs.numpy().astype(np.float64)
            return self.policy.actor(obs, deterministic=True).numpy().astype(np.float64).reshape(-1)

    def positions(self, X: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """The position the agent would hold over the next bar, per row (what it trades in its environment)."""
        out = self._outputs(X, position)
        if self.action == "discrete":
            return np.argmax(out, axis=1).astype(np.float64) - 1.0
        return np.clip(out, -1.0, 1.0)

    def predict(self, X: np.ndarray, position: np.ndarray | None = None) -> Prediction:
        out = self._outputs(X, position)
        if self.action == "discrete":
            choice = np.argmax(out, axis=1)
            return Prediction(choice.astype(np.int64) - 1, out[np.arange(len(out)), choice])
        size = np.abs(np.clip(out, -1.0, 1.0))
        inside = size < self.deadband
        side = np.where(inside, 0, np.sign(out)).astype(np.int64)
        confidence = np.where(inside, 1.0 - size / self.deadband if self.deadband > 0 else 1.0, size)
        return Prediction(side, np.clip(confidence, 0.0, 1.0))

    def to_bytes(self) -> bytes:
        torch = _torch()
        buffer = io.BytesIO()
        torch.save(self.policy.state_dict(), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, card: ModelCard) -> AgentModel:
        torch = _torch()
        who = card.run_id or card.kind
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"agent {who!r}: its weights cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if not isinstance(state, Mapping):
            raise ModelError(f"agent {who!r}: its artifact holds {type(state).__name__}, not a policy state_dict")
        if "observation" not in card.params:
            raise ModelError(f"agent {who!r}: its card lacks params.observation (the feature scaling)")
        policy = build_policy({"algorithm": card.kind, **card.params}, len(card.features))
        try:
            policy.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError) as exc:
            raise ModelError(f"agent {who!r}: its weights do not fit the network its card describes ({str(exc).splitlines()[0]})") from None
        return cls(card, policy)
