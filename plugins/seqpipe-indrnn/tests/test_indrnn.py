"""The plugin as users get it: through its installed entry point, in a real seqpipe registry."""

import torch

from seqpipe.plugins import make_plugin_manager


def test_registered_through_entry_point(seqpipe_registry):
    _, report = make_plugin_manager(strict=True)
    assert seqpipe_registry.get("cell", "indrnn", "test").plugin == "indrnn"
    assert report.loaded["indrnn"] == "seqpipe-indrnn"


def test_honours_the_cell_contract():
    from seqpipe.testing import check_cell
    from seqpipe_indrnn import IndRNNCell

    check_cell(IndRNNCell)
    check_cell(IndRNNCell, options={"activation": "tanh"})


def test_recurrence_is_elementwise():
    from seqpipe_indrnn import IndRNNCell

    cell = IndRNNCell(3, 4, activation="tanh")
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    expected = torch.tanh(cell.input(x) + cell.recurrent * h)
    assert torch.allclose(cell(x, (h,))[0], expected)


def test_sequence_path_matches_steps_with_ragged_lengths():
    from seqpipe_indrnn import IndRNNCell

    cell = IndRNNCell(3, 4)
    x, lengths = torch.randn(3, 5, 3), torch.tensor([5, 1, 3])
    out, (h,) = cell.forward_sequence(x, lengths, (torch.zeros(3, 4),))
    for i, n in enumerate(lengths.tolist()):
        state = (torch.zeros(1, 4),)
        for t in range(n):
            state = cell(x[i : i + 1, t], state)
        assert torch.allclose(state[0][0], h[i], atol=1e-6)
        assert torch.allclose(out[i, n - 1], h[i], atol=1e-6)
