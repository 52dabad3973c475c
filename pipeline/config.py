"""The cube's and the question tower's shapes and training schedules; the defaults are what the shipped bundle
(cubeqa/bundles/default) was trained with. Torch-free, so the CLI can show them without loading torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


def face_channels(dim: int, x: int, y: int) -> int:
    """Channels per cell needed to hold a `dim`-vector on an x×y face exactly."""
    if dim % (x * y):
        raise ValueError(f"a {dim}-vector does not tile a {x}x{y} face exactly ({dim} % {x * y} != 0)")
    return dim // (x * y)


@dataclass(frozen=True)
class CubeConfig:
    """Shape and dynamics of the lattice; stored in the bundle manifest."""

    dim: int = 384  # question/answer vector size (the teacher's)
    size: tuple[int, int, int] = (8, 8, 2)  # X, Y, Z cells
    channels: int = 64  # state channels per cell
    hidden: int = 64  # hidden width of the shared cell network
    steps: int = 2  # propagation steps T
    boundary: Literal["walls", "periodic"] = "walls"  # periodic wraps x and y; z is always walled
    injection: Literal["exact", "projection"] = "projection"
    reinject: bool = True  # add the input face at every step, not only the first

    def __post_init__(self) -> None:
        whole = {"dim": self.dim, "channels": self.channels, "hidden": self.hidden, "steps": self.steps}
        for name, value in whole.items():  # a manifest's JSON may hold anything
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        if len(self.size) != 3 or min(self.size) < 1:
            raise ValueError(f"size must be three positive ints, got {self.size}")
        if self.boundary not in ("walls", "periodic"):
            raise ValueError(f"boundary must be 'walls' or 'periodic', got {self.boundary!r}")
        if self.injection not in ("exact", "projection"):
            raise ValueError(f"injection must be 'exact' or 'projection', got {self.injection!r}")
        if self.injection == "exact":
            face_channels(self.dim, self.size[0], self.size[1])
        if self.steps < self.size[2] - 1:
            raise ValueError(f"{self.steps} steps cannot carry the input face (z = 0) to the output face (z = {self.size[2] - 1})")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CubeConfig:
        return cls(**data)


class ScheduleChecks:
    """Checks and serialisation shared by the InfoNCE training configs (`TrainConfig`, the tower's): mix into a frozen dataclass."""

    epochs: int
    batch_size: int
    threads: int
    lr: float
    temperature: float

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.threads < 1:
            raise ValueError("epochs, batch_size and threads must be at least 1")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass


@dataclass(frozen=True)
class TrainConfig(ScheduleChecks):
    """Optimiser, loss and schedule of `train_cube`; stored in the bundle manifest."""

    epochs: int = 4
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    infonce_weight: float = 0.25
    temperature: float = 0.05
    residual_l2: float = 0.3
    bank_negatives: bool = True  # InfoNCE over every unique train answer, not just the batch (False until the tower shipped)
    input_noise: float = 0.0  # norm of Gaussian noise added to training questions (then renormalised)
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = off, final weights = EMA
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.ema < 1:
            raise ValueError("ema must be in [0, 1)")


@dataclass(frozen=True)
class TowerConfig:
    """Which layers are tuned and how; stored beside the tower's weights."""

    layers: int = 4  # top transformer layers copied and tuned (of the teacher's six)
    lora_rank: int | None = None  # None: tune the copied layers fully; r: LoRA adapters of rank r on their linear maps
    lora_alpha: float = 16.0  # LoRA scale is alpha / rank
    batch_size: int = 16  # inference batch size

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ValueError("layers must be at least 1")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError("lora_rank must be None or at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TowerConfig:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


@dataclass(frozen=True)
class TowerTrainConfig(ScheduleChecks):
    """Optimiser, loss and schedule of `train_tower`."""

    epochs: int = 1
    batch_size: int = 128
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    temperature: float = 0.05
    cos_weight: float = 0.25
    seed: int = 0
    threads: int = 2
