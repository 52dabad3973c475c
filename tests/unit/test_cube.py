"""The lattice: shapes, neighbour directions, boundaries, identity at init, gradients, config reach."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from pipeline import Cube, CubeConfig
from pipeline.cube import DIRECTIONS, Perceive


def unit(batch: int, dim: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def perturbed(config: CubeConfig, seed: int = 0) -> Cube:
    """A cube with every weight random and the gate open, so every part shows in the output."""
    torch.manual_seed(seed)
    cube = Cube(config)
    with torch.no_grad():
        for param in cube.parameters():
            param.normal_(0, 0.3)
        cube.gate.fill_(0.7)
    return cube


def slow_propagate(cube: Cube, q: torch.Tensor) -> torch.Tensor:
    """Reference lattice: a Python loop over every cell and every neighbour slot."""
    cfg = cube.config
    sx, sy, sz = cfg.size
    face = cube.input_face(q)  # (B, X, Y, C)
    state = torch.zeros(q.shape[0], sx, sy, sz, cfg.channels)
    for step in range(cfg.steps):
        if step == 0 or cfg.reinject:
            state = state.clone()
            state[:, :, :, 0] += face
        new = state.clone()
        for x, y, z in itertools.product(range(sx), range(sy), range(sz)):
            parts = [state[:, x, y, z]]
            for dx, dy, dz in DIRECTIONS:
                nx, ny, nz = x + dx, y + dy, z + dz
                if cfg.boundary == "periodic" and 0 <= nz < sz:
                    parts.append(state[:, nx % sx, ny % sy, nz])
                elif 0 <= nx < sx and 0 <= ny < sy and 0 <= nz < sz:
                    parts.append(state[:, nx, ny, nz])
                else:
                    parts.append(torch.zeros_like(state[:, x, y, z]))
            new[:, x, y, z] = state[:, x, y, z] + cube.cell(torch.cat(parts, dim=-1))
        state = new
    return state


@pytest.mark.parametrize("boundary", ["walls", "periodic"])
@pytest.mark.parametrize("injection", ["projection", "exact"])
def test_vectorised_lattice_matches_python_loop_reference(boundary: str, injection: str) -> None:
    cube = perturbed(CubeConfig(dim=18, size=(3, 3, 3), channels=4, hidden=8, steps=3, boundary=boundary, injection=injection))
    q = unit(2, 18)
    with torch.no_grad():
        assert torch.allclose(cube.propagate(q), slow_propagate(cube, q), atol=1e-5)


def test_shapes_and_unit_norm() -> None:
    cube = perturbed(CubeConfig(dim=24, size=(2, 3, 4), channels=5, hidden=7, steps=3))
    q = unit(6, 24)
    assert cube.propagate(q).shape == (6, 2, 3, 4, 5)
    out = cube(q)
    assert out.shape == (6, 24)
    assert torch.allclose(out.norm(dim=-1), torch.ones(6), atol=1e-5)


def test_untrained_cube_is_the_identity_map() -> None:
    cube = Cube(CubeConfig(dim=18, size=(3, 3, 3), channels=4, hidden=8, steps=3))
    q = unit(5, 18)
    assert torch.equal(cube(q), F.normalize(q, dim=-1))
    assert cube.gate.item() == 0.0


def test_neighbour_slots_are_direction_stable() -> None:
    state = torch.zeros(1, 3, 3, 3, 1)
    state[0, 1, 1, 1, 0] = 1.0
    seen = Perceive("walls")(state)[0]  # (X, Y, Z, 7)
    assert seen[1, 1, 1, 0] == 1.0  # slot 0: the cell itself
    for slot, (dx, dy, dz) in enumerate(DIRECTIONS, start=1):
        # the hot cell is the (dx, dy, dz)-neighbour of the cell at (1 - dx, 1 - dy, 1 - dz)
        assert seen[1 - dx, 1 - dy, 1 - dz, slot] == 1.0
        assert seen[..., slot].sum() == 1.0


def test_walls_read_zero_and_periodic_wraps() -> None:
    state = torch.zeros(1, 3, 3, 3, 1)
    state[0, 2, 0, 0, 0] = 1.0  # far side of x
    x_minus = 1  # slot of DIRECTIONS[0] == (-1, 0, 0)
    assert DIRECTIONS[0] == (-1, 0, 0)
    assert Perceive("walls")(state)[0, 0, 0, 0, x_minus] == 0.0
    assert Perceive("periodic")(state)[0, 0, 0, 0, x_minus] == 1.0


def test_gradient_reaches_cell_weights() -> None:
    cube = Cube(CubeConfig(dim=18, size=(3, 3, 3), channels=4, hidden=8, steps=3))
    optimiser = torch.optim.SGD(cube.parameters(), lr=0.5)
    q, target = unit(8, 18, seed=1), unit(8, 18, seed=2)
    for _ in range(2):  # the gate opens on the first step, then the cells receive gradient
        optimiser.zero_grad()
        loss = (1 - (cube(q) * target).sum(-1)).mean()
        loss.backward()
        optimiser.step()
    assert cube.gate.item() != 0.0
    for name in ("cell.inp.weight", "cell.out.weight", "inject.weight", "readout.weight"):
        grad = dict(cube.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_signal_crosses_the_lattice_from_input_to_output_face() -> None:
    """With Z = 4 it takes T = 3 steps for the output face to hear the input face; fewer is refused."""
    base = dict(dim=18, size=(3, 3, 4), channels=4, hidden=8, reinject=False)
    q1, q2 = unit(1, 18, seed=3), unit(1, 18, seed=4)
    long = perturbed(CubeConfig(**base, steps=3))
    assert not torch.allclose(long.residual(q1), long.residual(q2))
    with pytest.raises(ValueError, match="cannot carry"):
        CubeConfig(**base, steps=2)


def test_periodic_walls_wrap_x_and_y_but_not_z() -> None:
    state = torch.zeros(1, 3, 3, 3, 1)
    state[0, 0, 0, 2, 0] = 1.0  # on the output face
    seen = Perceive("periodic")(state)[0]  # (X, Y, Z, 7): one channel, seven slots
    z_minus = 1 + DIRECTIONS.index((0, 0, -1))
    x_plus = 1 + DIRECTIONS.index((1, 0, 0))
    assert seen[0, 0, 0, z_minus] == 0.0  # the input face does not see the output face
    assert seen[2, 0, 2, x_plus] == 1.0  # x wraps


@pytest.mark.parametrize(
    "change",
    [{"steps": 3}, {"boundary": "periodic"}, {"reinject": False}, {"size": (3, 3, 2)}],
)
def test_every_dynamic_config_field_changes_the_output(change: dict) -> None:
    base = dict(dim=18, size=(3, 3, 3), channels=4, hidden=8, steps=4)
    q = unit(3, 18)
    with torch.no_grad():
        reference = perturbed(CubeConfig(**base))(q)
        changed = perturbed(CubeConfig(**{**base, **change}))(q)
    assert not torch.allclose(reference, changed)


def test_shape_fields_reach_the_parameters() -> None:
    cube = Cube(CubeConfig(dim=18, size=(3, 3, 2), channels=5, hidden=11, injection="exact"))
    assert cube.cell.inp.weight.shape == (11, 5 * 7)
    assert cube.cell.out.weight.shape == (5, 11)
    assert cube.inject.weight.shape == (5, 2)  # 18 = 3·3 cells × 2 channels, exact
    assert cube.readout.weight.shape == (18, 3 * 3 * 5)
    projected = Cube(CubeConfig(dim=18, size=(3, 3, 2), channels=5, hidden=11, injection="projection"))
    assert projected.inject.weight.shape == (3 * 3 * 5, 18)


def test_config_round_trips_and_rejects_nonsense() -> None:
    config = CubeConfig(dim=18, size=(3, 3, 2), boundary="periodic")
    assert CubeConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="boundary"):
        CubeConfig(boundary="mirror")
    with pytest.raises(ValueError, match="tile"):
        CubeConfig(dim=20, size=(3, 3, 2), injection="exact")
