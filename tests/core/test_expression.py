"""Functions of x written as text: the grammar's refusals and the values it computes."""

import math

import pytest

from core import expression

MATH = {
    "exp": math.exp,
    "log": math.log,
    "sin": math.sin,
    "cos": math.cos,
    "tanh": math.tanh,
    "sqrt": math.sqrt,
    "abs": abs,
    "relu": lambda v: max(v, 0.0),
    "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
}


def value(text: str, x: float) -> float:
    return expression.evaluate(expression.parse(text), x, MATH, float)


@pytest.mark.parametrize(
    ("text", "x", "expected"),
    [
        ("1 - exp(-x**2) - 0.5*exp(-(x-3)**2)", 3.0, 1 - math.exp(-9) - 0.5),
        ("-x**2", 2.0, -4.0),  # ** binds tighter than unary minus, as in Python
        ("2**-1 + +x / 4", 2.0, 1.0),
        ("relu(x - 1) + sigmoid(0) + abs(-x)", 3.0, 2.0 + 0.5 + 3.0),
        ("sqrt(x) * log(e) + sin(pi / 2) + cos(0) + tanh(0)", 4.0, 4.0),
    ],
)
def test_an_expression_computes_what_python_would(text: str, x: float, expected: float) -> None:
    assert value(text, x) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", "the functions are"),
        ("x.real", "is not allowed"),
        ("exp(x, 2)", "exp takes one argument"),
        ("exp", "exp is a function"),
        ("y + 1", "unknown name 'y'"),
        ("x if x else 1", "is not allowed"),
        ("x % 2", "is not allowed"),
        ("[x]", "is not allowed"),
        ("True + x", "is not allowed"),
        ("1e999 * x", "numbers are at most"),
        ("x +", "not an expression"),
        ("x" + " + x" * 60, "at most 200 characters"),
        ("-" * 25 + "x", "nests at most 20 deep"),
    ],
)
def test_anything_else_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        expression.parse(text)
