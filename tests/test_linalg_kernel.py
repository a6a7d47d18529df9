"""`linalg.TransitionKernel`: the host constants of one drift, built once; calls make no host sync.

Each time gets its own squaring count, so its result does not depend on the other times in its batch,
and a time beyond the kernel's bound comes out NaN (never a silently wrong matrix)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import kinetic as kn
from kinetic import linalg

F64 = torch.float64


def _kernel(sde, tau_max):
    G = sde.diffusion_matrix
    return linalg.TransitionKernel(sde.drift_matrix, sde.noise_matrix, G[:, G.abs().sum(0) > 0], tau_max=tau_max)


def test_kernel_matches_scipy_and_the_public_functions():
    for sde in (kn.cld(), kn.hold(), kn.langevin(5)):
        A, D = sde.drift_matrix, sde.noise_matrix
        K = _kernel(sde, 60.0)
        tau = torch.tensor([1e-6, 1e-2, 0.7, 5.0, 60.0], dtype=F64)
        phi, q = K.transition_and_noise(tau)
        p2, Lq = K.transition_and_noise_factor(tau)
        for i, s in enumerate(tau.tolist()):
            ref = scipy.linalg.expm(s * A.numpy())
            assert np.max(np.abs(phi[i].numpy() - ref)) <= 1e-12 * max(1.0, np.abs(ref).max()), (sde, s)
        torch.testing.assert_close(p2, phi, rtol=1e-13, atol=0)
        torch.testing.assert_close(Lq @ Lq.transpose(-1, -2), q, rtol=1e-9, atol=1e-15)
        p_pub, q_pub = linalg.transition_and_noise(A, D, tau)
        torch.testing.assert_close(p_pub, phi, rtol=1e-13, atol=0)
        torch.testing.assert_close(q_pub, q, rtol=1e-13, atol=0)


def test_each_time_is_computed_as_if_alone():
    """A tiny tau next to a large one keeps its own (zero) squaring count: its Q, of order tau^(2k-1),
    keeps the digits it has alone (a squaring count shared with tau = B(T) rounds it differently)."""
    sde = kn.langevin(6)
    tau_T = sde.tau(torch.tensor(1.0, dtype=F64)).item()
    K = _kernel(sde, tau_T)
    assert K.max_squarings >= 3
    small = torch.tensor([1e-7], dtype=F64)
    alone_phi, alone_q = K.transition_and_noise(small)
    both_phi, both_q = K.transition_and_noise(torch.cat([small, torch.tensor([tau_T], dtype=F64)]))
    assert torch.isfinite(both_phi).all() and torch.isfinite(both_q).all()
    # a few ulps (batched matmuls may round differently); one count shared with tau_T differs by ~4e-14
    torch.testing.assert_close(both_q[:1], alone_q, rtol=4e-15, atol=0)
    torch.testing.assert_close(both_phi[:1], alone_phi, rtol=4e-15, atol=0)
    assert alone_q[0, 0, 0] > 0 and alone_q[0, 0, 0] < 1e-60  # the data block's O(tau^11) variance


def test_kernel_beyond_its_bound_is_nan():
    sde = kn.hold()
    K = _kernel(sde, 1.0)
    tau = torch.tensor([0.5, 1.0, 1e6, float("nan"), float("inf"), -1e6], dtype=F64)
    phi, q = K.transition_and_noise(tau)
    _, Lq = K.transition_and_noise_factor(tau)
    assert torch.isfinite(phi[:2]).all() and torch.isfinite(q[:2]).all() and torch.isfinite(Lq[:2]).all()
    assert torch.isnan(phi[2:]).all() and torch.isnan(q[2:]).all() and torch.isnan(torch.diagonal(Lq[2:], dim1=-2, dim2=-1)).all()
    # the public functions take their bound from tau itself: any finite tau is accepted
    assert torch.isfinite(linalg.expm(sde.drift_matrix, tau[2:3])).all()


@pytest.mark.parametrize("sde", [kn.hold(), kn.psld(), kn.langevin(8), kn.cld()], ids=["hold", "psld", "langevin8", "cld"])
def test_host_subsets_and_device_selection_give_the_same_coefficients(sde, monkeypatch):
    """`kinetic.sde.HOST_SUBSETS`: on the CPU the accurate fallbacks are computed only for the times
    that need them; the device path computes them for every time and selects. Same values (to a few
    ulps of batched rounding) from 1e-8 to T, where both fallbacks are taken at the small times."""
    import kinetic.sde

    t = torch.cat([torch.logspace(-8, 0, 40, dtype=torch.float64) * sde.T, torch.tensor([sde.T / 3])])
    host = sde.coefficients(t)
    monkeypatch.setattr(kinetic.sde, "HOST_SUBSETS", False)
    dev = sde.coefficients(t)
    for name in ("phi", "sigma", "chol"):
        a, b = getattr(host, name), getattr(dev, name)
        scale = a.abs().amax(dim=-1, keepdim=True).clamp_min(1e-300)  # per row: the blocks are graded
        assert torch.allclose(a / scale, b / scale, rtol=0, atol=1e-13), name
