"""How far LBFGS carries a last-bit difference: torch.optim.LBFGS (strong Wolfe, history 100,
20 iterations a step) fits a 1-50-1 tanh MLP to 150 noisy sine points twice, the second time
with one first-layer weight moved by one float32 ulp, and prints the loss of both runs after
each step and their relative difference. This is why LBFGS members of a stack step with
arithmetic that gives each member what it gets alone (models/lbfgs.py), not with a stack's
batched products, which may differ from a model's own in the last bit.

    .venv/bin/python benchmarks/lbfgs_sensitivity.py [--steps 20]
"""

import argparse

import torch


def run(steps: int, nudged: bool) -> list[float]:
    torch.manual_seed(0)
    x = torch.linspace(-3, 3, 150).unsqueeze(1)
    y = torch.sin(x) + 0.15 * torch.randn_like(x)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(1, 50), torch.nn.Tanh(), torch.nn.Linear(50, 1))
    if nudged:
        with torch.no_grad():
            w = model[0].weight
            w[0, 0] = torch.nextafter(w[0, 0], w[0, 0] + 1)
    optimizer = torch.optim.LBFGS(
        model.parameters(), max_iter=20, history_size=100, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    losses = []
    for _ in range(steps):
        optimizer.step(closure)
        with torch.no_grad():
            losses.append(torch.nn.functional.mse_loss(model(x), y).item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plain, nudged = run(args.steps, False), run(args.steps, True)
    print(f"{'step':>4} {'loss':>12} {'nudged':>12} {'relative':>10}")
    for step, (a, b) in enumerate(zip(plain, nudged, strict=True), 1):
        print(f"{step:4d} {a:12.8f} {b:12.8f} {abs(a - b) / a:10.2e}")


if __name__ == "__main__":
    main()
