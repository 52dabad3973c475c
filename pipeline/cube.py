"""The 3D lattice core: a neural cellular automaton over an X×Y×Z cube of cells.

Every cell holds a C-channel state. One shared cell network reads a cell's own
state and its six face neighbours (fixed direction slots) and adds an update,
for T steps. The question vector enters through the input face (z = 0), the
answer is read from the output face (z = Z-1), and a gated residual makes the
untrained cube the identity map: out = normalise(q + g·readout(face)), g = 0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import CubeConfig, face_channels
from pipeline.reshape import vector_to_face

# Neighbour slots, in the order they are stacked after a cell's own state.
DIRECTIONS: tuple[tuple[int, int, int], ...] = (
    (-1, 0, 0),  # x-
    (1, 0, 0),  # x+
    (0, -1, 0),  # y-
    (0, 1, 0),  # y+
    (0, 0, -1),  # z-  (towards the input face)
    (0, 0, 1),  # z+  (towards the output face)
)
SLOTS = 1 + len(DIRECTIONS)


def pad_lattice(state: torch.Tensor, periodic: bool) -> torch.Tensor:
    """(B, X, Y, Z, C) -> (B, X+2, Y+2, Z+2, C): zeros beyond walls; periodic wraps x and y.

    z is always walled: wrapping it would make the output face a neighbour of the input face.
    """
    if not periodic:
        return F.pad(state, (0, 0, 1, 1, 1, 1, 1, 1))
    state = F.pad(state, (0, 0, 1, 1))  # z walls
    for axis in (1, 2):
        first, last = state.narrow(axis, 0, 1), state.narrow(axis, state.shape[axis] - 1, 1)
        state = torch.cat([last, state, first], dim=axis)
    return state


class Perceive(nn.Module):
    """Gathers each cell's state and its six neighbours: (B, X, Y, Z, C) -> (B, X, Y, Z, 7C).

    Slot k of the output holds the neighbour at DIRECTIONS[k-1]; a neighbour across a wall
    reads zeros, and with periodic boundaries it wraps around to the opposite side in x and y.
    """

    def __init__(self, boundary: str) -> None:
        super().__init__()
        self.periodic = boundary == "periodic"

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        _, sx, sy, sz, _ = state.shape
        padded = pad_lattice(state, self.periodic)
        views = [state]
        for dx, dy, dz in DIRECTIONS:  # padded[1 + x + dx] is the neighbour of x at offset dx
            views.append(padded[:, 1 + dx : 1 + dx + sx, 1 + dy : 1 + dy + sy, 1 + dz : 1 + dz + sz])
        return torch.cat(views, dim=-1)  # (B, X, Y, Z, 7C), slot-major


class CellNet(nn.Module):
    """The shared cell prototype: the same two-layer net applied to every cell's perception."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.inp = nn.Linear(channels * SLOTS, hidden)
        self.out = nn.Linear(hidden, channels)

    def forward(self, perception: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.inp(perception)))  # (B, X, Y, Z, C)


class Cube(nn.Module):
    """Maps unit question vectors (B, D) to unit answer vectors (B, D) through the lattice."""

    def __init__(self, config: CubeConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CubeConfig()
        fx, fy, _ = cfg.size
        face_cells = fx * fy
        if cfg.injection == "exact":
            self.inject = nn.Linear(face_channels(cfg.dim, fx, fy), cfg.channels)  # per face cell
        else:
            self.inject = nn.Linear(cfg.dim, face_cells * cfg.channels)
        self.perceive = Perceive(cfg.boundary)
        self.cell = CellNet(cfg.channels, cfg.hidden)
        self.readout = nn.Linear(face_cells * cfg.channels, cfg.dim)
        self.gate = nn.Parameter(torch.zeros(()))  # g = 0: the untrained cube is the identity

    def input_face(self, q: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, X, Y, C): what the question writes onto the z = 0 face."""
        fx, fy, _ = self.config.size
        scaled = q * self.config.dim**0.5  # unit vectors -> entries of unit scale
        if self.config.injection == "exact":
            return self.inject(vector_to_face(scaled, fx, fy).permute(0, 2, 3, 1))  # (B, X, Y, C_in) -> (B, X, Y, C)
        return self.inject(scaled).reshape(q.shape[0], fx, fy, self.config.channels)

    def propagate(self, q: torch.Tensor) -> torch.Tensor:
        """Runs the T steps from an empty lattice; returns the state (B, X, Y, Z, C)."""
        cfg = self.config
        face = self.input_face(q).unsqueeze(3)  # (B, X, Y, 1, C)
        state = q.new_zeros(q.shape[0], *cfg.size, cfg.channels)  # (B, X, Y, Z, C)
        for step in range(cfg.steps):
            if step == 0 or cfg.reinject:
                state = torch.cat([state[:, :, :, :1] + face, state[:, :, :, 1:]], dim=3)  # face at z = 0
            state = state + self.cell(self.perceive(state))
        return state

    def residual(self, q: torch.Tensor) -> torch.Tensor:
        """The lattice's contribution before gating: readout of the output face, (B, D)."""
        out_face = self.propagate(q)[:, :, :, -1]  # (B, X, Y, C) at z = Z-1
        return self.readout(out_face.reshape(q.shape[0], -1))

    def forward_parts(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (B, D) -> (answer (B, D) unit vectors, gated residual (B, D)) for losses on both."""
        delta = self.gate * self.residual(q)
        return F.normalize(q + delta, dim=-1), delta

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """q: (B, D) unit vectors -> (B, D) unit vectors."""
        return self.forward_parts(q)[0]


def apply_map(model: nn.Module, q: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Runs a vector map over (N, D) float32 vectors in inference mode."""
    model.eval()
    with torch.inference_mode():
        parts = [model(torch.from_numpy(q[i : i + batch_size])) for i in range(0, len(q), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros_like(q)
