"""A function of one variable x written as text ("1 - exp(-x**2)"), parsed with Python's ast
and held to a small grammar: numbers, x, pi, e, + - * / ** (unary minus and plus too) and
the calls in FUNCTIONS. No torch here: the caller evaluates the tree with its own functions."""

import ast
import math
from collections.abc import Callable, Mapping
from typing import Any

FUNCTIONS = ("exp", "log", "sin", "cos", "tanh", "sqrt", "abs", "relu", "sigmoid")
CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_LENGTH = 200
MAX_DEPTH = 20
MAX_NUMBER = 1e6

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


def parse(text: str) -> ast.expr:
    """The checked tree of `text`; a ValueError says what is not allowed."""
    if len(text) > MAX_LENGTH:
        raise ValueError(f"an expression has at most {MAX_LENGTH} characters, not {len(text)}")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"not an expression: {exc.msg} at character {exc.offset}") from None
    _check(tree, 1)
    return tree


def _check(node: ast.expr, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"an expression nests at most {MAX_DEPTH} deep")
    match node:
        case ast.Constant(value=value) if type(value) in (int, float):
            if not abs(value) <= MAX_NUMBER:
                raise ValueError(f"numbers are at most {MAX_NUMBER:g} in size, not {value!r}")
        case ast.Name(id=name) if name == "x" or name in CONSTANTS:
            pass
        case ast.Name(id=name) if name in FUNCTIONS:
            raise ValueError(f"{name} is a function: write {name}(...)")
        case ast.Name(id=name):
            raise ValueError(f"unknown name {name!r}; the variable is x, the constants pi and e")
        case ast.UnaryOp(op=ast.USub() | ast.UAdd(), operand=operand):
            _check(operand, depth + 1)
        case ast.BinOp(op=op, left=left, right=right) if type(op) in _BINARY:
            _check(left, depth + 1)
            _check(right, depth + 1)
        case ast.Call(func=ast.Name(id=name), args=[arg], keywords=[]) if name in FUNCTIONS:
            _check(arg, depth + 1)
        case ast.Call(func=ast.Name(id=name)) if name in FUNCTIONS:
            raise ValueError(f"{name} takes one argument")
        case ast.Call():
            raise ValueError(f"the functions are {', '.join(FUNCTIONS)}")
        case _:
            raise ValueError(
                f"{ast.unparse(node)!r} is not allowed: use numbers, x, pi, e, "
                f"{' '.join(_SYMBOLS.values())} and {', '.join(FUNCTIONS)}"
            )


def evaluate(
    tree: ast.expr,
    x: Any,
    functions: Mapping[str, Callable[[Any], Any]],
    constant: Callable[[float], Any],
) -> Any:
    """The tree's value at x; `functions` gives each name in FUNCTIONS, `constant` makes a
    number into the type x has (so that 10**400 is inf, not a Python OverflowError)."""
    match node := tree:
        case ast.Constant(value=value):
            return constant(float(value))
        case ast.Name(id="x"):
            return x
        case ast.Name(id=name):
            return constant(CONSTANTS[name])
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -evaluate(operand, x, functions, constant)
        case ast.UnaryOp(operand=operand):
            return evaluate(operand, x, functions, constant)
        case ast.BinOp(op=op, left=left, right=right):
            a = evaluate(left, x, functions, constant)
            return _BINARY[type(op)](a, evaluate(right, x, functions, constant))
        case ast.Call(func=ast.Name(id=name), args=[arg]):
            return functions[name](evaluate(arg, x, functions, constant))
    raise ValueError(f"unchecked tree {ast.dump(node)}")
