"""Initial-state strategies: zeros, random (training-time noise), learnable (trained, exported)."""

from __future__ import annotations

import torch

from seqpipe.initial_state import InitialState


def test_zeros():
    state = InitialState("zeros", {"h": (2, 3), "c": (2, 3)})(4)
    assert len(state) == 2 and all(s.shape == (4, 2, 3) and not s.any() for s in state)


def test_random_is_seeded_noise_in_training_and_zeros_in_eval():
    init = InitialState("random", {"h": (1, 5)}, scale=0.5)
    torch.manual_seed(0)
    a = init(3)[0]
    torch.manual_seed(0)
    b = init(3)[0]
    assert torch.equal(a, b) and a.abs().sum() > 0 and not torch.equal(a[0], a[1])
    assert 0.2 < float(a.std()) < 1.0
    init.eval()
    assert not init(3)[0].any()
    assert init.spec()["served_as"] == "zeros"


def test_learnable_is_trained_and_shared_across_the_batch():
    init = InitialState("learnable", {"h": (2, 3)})
    assert [n for n, _ in init.named_parameters()] == ["values.h"]
    (init(4)[0] * torch.arange(3.0)).sum().backward()
    assert init.values["h"].grad is not None and init.values["h"].grad.abs().sum() > 0
    with torch.no_grad():
        init.values["h"].add_(1.0)
    state = init(4)[0]
    assert torch.equal(state[0], state[3])
    assert init.spec()["values"]["h"] == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
