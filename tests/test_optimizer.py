"""The recipe's SGD: fused on CUDA, and equal to the plain SGD when the GradScaler skips steps."""

import pytest
import torch

from deeplabv3plus.optimizer import build_sgd

STEPS = [True, False, False, True, False]  # whether the scaler finds an inf at each step (the first one: routine)


def run(optimizer_for, device: str) -> list[torch.Tensor]:
    """Scaled gradients with infs where STEPS says. A plain SGD skips those steps as GradScaler.step does; a fused
    one is handed the scale and the inf flag on the device, as GradScaler.step hands them to it."""
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(5, generator=generator), torch.randn(3, 2, generator=generator)]
    gradients = [[torch.randn(value.shape, generator=generator) for value in start] for _ in STEPS]
    parameters = [torch.nn.Parameter(value.clone().to(device)) for value in start]
    optimizer = optimizer_for(parameters)
    for step_gradients, found_inf in zip(gradients, STEPS):
        for parameter, gradient in zip(parameters, step_gradients):
            scaled = gradient * 4
            scaled.view(-1)[0] = float("inf") if found_inf else scaled.view(-1)[0]
            parameter.grad = scaled.to(device)
        if optimizer.param_groups[0]["fused"]:
            optimizer.grad_scale = torch.tensor(4.0, device=device)
            optimizer.found_inf = torch.tensor(float(found_inf), device=device)
            optimizer.step()
        elif not found_inf:
            for parameter in parameters:
                parameter.grad /= 4
            optimizer.step()
    return [parameter.detach().cpu() for parameter in parameters]


def plain_sgd(parameters):
    return torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=5e-4)


def test_build_sgd_on_cuda_equals_the_plain_sgd_when_the_scaler_skips_steps(fake_cuda):
    fused = run(lambda parameters: build_sgd(parameters, 0.1, 0.9, 5e-4, "cuda"), "cuda")
    for value, reference in zip(fused, run(plain_sgd, "cpu")):
        torch.testing.assert_close(value, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_build_sgd_fuses_and_zeroes_the_momentum_on_cuda_only(fake_cuda, device):
    parameter = torch.nn.Parameter(torch.ones(2).to(device))
    optimizer = build_sgd([parameter], 0.1, 0.9, 0.0, device)
    assert optimizer.param_groups[0]["fused"] == (device == "cuda")
    assert (optimizer.state[parameter]["momentum_buffer"].cpu().tolist() == [0.0, 0.0]) if device == "cuda" \
        else not optimizer.state
