"""The calculator of the mock tools and the tool library: arithmetic through a hand-walked `ast` tree, no eval,
bounded work (it reads model output as code-like text, so it refuses quickly: at most 200 characters and 64 syntax
nodes; numbers, + - * / // % ** and parentheses only; an exponent above 64, a power or product whose result would
exceed 300 digits, and any result longer than 300 characters are refused before they are computed)."""
import ast
import math

MAX_EXPR_CHARS = 200
MAX_NODES = 64
MAX_EXPONENT = 64
MAX_DIGITS = 300


class CalcError(ValueError):
    """An expression the calculator refuses (syntax, operator, size); the message says which."""


def _digits(x) -> float:
    """Roughly how many decimal digits |x| has (for floats: of its integer part)."""
    x = abs(x)
    return math.log10(x) + 1 if x >= 1 else 1.0


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a ** b,
}


def _check_size(value):
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("the result is not a finite number")
    if _digits(value) > MAX_DIGITS:
        raise CalcError(f"the result would have more than {MAX_DIGITS} digits")
    return value


def _walk(node):
    if isinstance(node, ast.Expression):
        return _walk(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalcError(f"only numbers are allowed, not {node.value!r}")
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _walk(node.operand)
        return v if isinstance(node.op, ast.UAdd) else -v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(b) > MAX_EXPONENT:
                raise CalcError(f"exponent {b} is too large (at most {MAX_EXPONENT})")
            if abs(a) > 1 and b > 0 and b * math.log10(abs(a)) > MAX_DIGITS:
                raise CalcError(f"the result would have more than {MAX_DIGITS} digits")
            if a == 0 and b < 0:
                raise CalcError("division by zero")
            if a < 0 and not float(b).is_integer():
                raise CalcError("a negative number to a fractional power is not a real number")
        elif isinstance(node.op, ast.Mult) and _digits(a) + _digits(b) > MAX_DIGITS + 1:
            raise CalcError(f"the result would have more than {MAX_DIGITS} digits")
        elif isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
            raise CalcError("division by zero")
        try:
            return _check_size(_BINOPS[type(node.op)](a, b))
        except OverflowError:
            raise CalcError("the result is too large") from None
    what = type(node.op).__name__ if isinstance(node, (ast.BinOp, ast.UnaryOp)) else type(node).__name__
    raise CalcError(f"unsupported syntax: {what} (numbers, + - * / // % ** and parentheses only)")


def calculate(expression: str):
    """The value of an arithmetic expression, or CalcError. Accepts × ÷ and full-width digits/brackets too."""
    if not isinstance(expression, str):
        raise CalcError("expression must be a string")
    text = expression.strip().translate(str.maketrans("×÷（）＋－＊／", "*/()+-*/"))
    text = "".join(chr(ord(c) - 0xFEE0) if "０" <= c <= "９" else c for c in text).replace("^", "**")
    if not text:
        raise CalcError("empty expression")
    if len(text) > MAX_EXPR_CHARS:
        raise CalcError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalcError(f"not an arithmetic expression: {expression!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalcError(f"expression has more than {MAX_NODES} parts")
    value = _walk(tree)
    if isinstance(value, float):
        value = int(value) if value.is_integer() and abs(value) < 1e15 else round(value, 10)
    if len(str(value)) > MAX_DIGITS:
        raise CalcError(f"result longer than {MAX_DIGITS} characters")
    return value
